"""Seconds per training step and peak RSS at the tiny config, against a baseline measured in the same run.

    python benchmarks/train_step.py [--steps 5] [--frames 4] [--threads 1]

Each variant runs in its own process (peak RSS is per process) on the same tiny
weights and synthetic clips (80x64 crops):
- baseline: v-loss only, no gradient checkpointing;
- df:       + the Dynamic Frequency loss (VAE decode with gradient);
- df+gc:    + gradient checkpointing (the default config).
Printed: seconds per optimizer step, peak RSS, and both as ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "baseline": {"loss.df_weight": 0.0, "model.gradient_checkpointing": False},
    "df": {"loss.df_weight": 0.01, "model.gradient_checkpointing": False},
    "df+gc": {"loss.df_weight": 0.01, "model.gradient_checkpointing": True},
}

CONFIG = """
[data]
root = "clips"
num_frames = {frames}
crop_height = 80
crop_width = 64
[model]
weights_dir = "weights"
[train]
output_dir = "run"
mixed_precision = "no"
"""


def make_workspace(root: Path, frames: int) -> Path:
    from star_cli.testing import make_tiny_weights
    from star_cli.testing.media import make_video

    make_tiny_weights(root / "weights")
    for sub in ("gt", "lq"):
        (root / "clips" / sub).mkdir(parents=True)
    for i in range(2):
        make_video(root / "clips" / "gt" / f"c{i}.mp4", frames=frames + 2, width=96, height=96, seed=i, audio=False)
        make_video(root / "clips" / "lq" / f"c{i}.mp4", frames=frames + 2, width=24, height=24, seed=i, audio=False)
    (root / "cfg.toml").write_text(CONFIG.format(frames=frames), encoding="utf-8")
    return root / "cfg.toml"


def measure(config: Path, variant: str, steps: int, threads: int) -> dict[str, float]:
    """Run warm-up + `steps` optimizer steps in this process; seconds per step and peak RSS (MiB)."""
    import torch
    from rich.console import Console

    from star_cli.train import loop
    from star_cli.train.config_file import load_config
    from star_cli.train.data import ClipSampler, make_loader

    torch.set_num_threads(threads)
    s = loop.setup(load_config(config, VARIANTS[variant]), Console(quiet=True))
    batches = iter(make_loader(s.dataset, ClipSampler(len(s.dataset), 0), 1, 0))

    def step() -> None:
        terms = loop.compute_loss(s, next(batches))
        s.accelerator.backward(terms.total)
        s.accelerator.clip_grad_norm_(s.params, s.cfg.optim.max_grad_norm)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, first-call overheads
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return {"seconds_per_step": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1], args.steps, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        config = make_workspace(Path(tmp), args.frames)
        results = {}
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--child", str(config), variant, "--steps", str(args.steps),
                       "--threads", str(args.threads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[variant] = json.loads(out.strip().splitlines()[-1])
    base = results["baseline"]
    print(f"tiny config: 80x64 crop, {args.frames} frames, batch 1, {args.steps} timed steps, {args.threads} thread(s)")
    print(f"{'variant':<10} {'s/step':>8} {'x base':>7} {'peak RSS MiB':>13} {'x base':>7}")
    for variant, r in results.items():
        print(f"{variant:<10} {r['seconds_per_step']:>8.3f} {r['seconds_per_step'] / base['seconds_per_step']:>7.2f} "
              f"{r['peak_rss_mib']:>13.0f} {r['peak_rss_mib'] / base['peak_rss_mib']:>7.2f}")


if __name__ == "__main__":
    main()

"""Peak memory of converting a full-size STAR checkpoint (.pt, float32) to fp16 safetensors.

The official `light_deg.pt` / `heavy_deg.pt` are plain dicts of float32 tensors, about
8.17 GB. This writes a random checkpoint of exactly that model (2.04B parameters, each
tensor its own storage, wrapped in `state_dict` with a `module.` prefix and two training
leftovers, as checkpoints may ship) to a scratch folder, then converts it in a fresh
process with `star_cli.hub.convert.convert_star_checkpoint` while a sampler thread reads
/proc/self/status every 20 ms:

- RssAnon: memory the process owns (the fp16 copies, Python, torch); this is what must
  never reach two full copies of the model;
- RssFile: pages of the memory-mapped checkpoint currently mapped in (page cache the
  kernel can drop at any time; it is counted in RSS while mapped);
- VmHWM: the kernel's peak RSS (anon + file).

Ratios are against the checkpoint's own size, measured in the same run (one full float32
copy). Needs about 2 x 8.2 GB of free disk and, while the checkpoint is generated, 8.2 GB
of memory. Usage: python benchmarks/convert_memory.py [--dir /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GB = 1e9
LEFTOVERS = ("VideoControlNet.scale_cond.0.weight", "hint_time_zero_linear.bias")


def _status() -> dict[str, int]:
    """Memory fields of /proc/self/status, in bytes."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


def generate(path: Path) -> None:
    """A random float32 checkpoint of the full-size STARUNet, written as the official files are."""
    import torch

    from star_cli.models import STARUNet

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in STARUNet().state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {f"module.{k}": torch.rand(shape, generator=generator) for k, shape in shapes.items()}
    state.update({f"module.{k}": torch.zeros(4) for k in LEFTOVERS})
    torch.save({"state_dict": state}, path)


def convert(src: Path, dest: Path) -> None:
    """Convert `src` while sampling memory; print the peaks as JSON."""
    from star_cli.hub.convert import convert_star_checkpoint

    peaks = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for name, value in _status().items():
                peaks[name] = max(peaks[name], value)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    dropped = convert_star_checkpoint(src, dest, config={}, source_sha256="0" * 64)
    done.set()
    sampler.join()
    for name, value in _status().items():
        peaks[name] = max(peaks[name], value)
    print(json.dumps({**peaks, "seconds": time.perf_counter() - start, "dropped": dropped}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="scratch folder (16.4 GB free)")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint and the conversion")
    parser.add_argument("--step", choices=("generate", "convert"), help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "generate":
        return generate(args.src)
    if args.step == "convert":
        return convert(args.src, args.dest)
    scratch = Path(tempfile.mkdtemp(prefix="star-convert-", dir=args.dir))
    src, dest = scratch / "light_deg.pt", scratch / "light_deg.safetensors"
    try:
        here = [sys.executable, __file__]
        started = time.perf_counter()
        subprocess.run([*here, "--step", "generate", "--src", str(src)], check=True)
        print(f"generated {src.stat().st_size / GB:.2f} GB in {time.perf_counter() - started:.0f} s")
        result = subprocess.run(
            [*here, "--step", "convert", "--src", str(src), "--dest", str(dest)], check=True, capture_output=True, text=True
        )
        peaks = json.loads(result.stdout.strip().splitlines()[-1])
        checkpoint = src.stat().st_size
        print(f"checkpoint (one float32 copy, the baseline): {checkpoint / GB:.2f} GB; output {dest.stat().st_size / GB:.2f} GB")
        print(f"conversion: {peaks['seconds']:.0f} s, dropped {peaks['dropped']}")
        for name, meaning in (
            ("RssAnon", "owned memory"),
            ("RssFile", "mapped checkpoint pages (droppable page cache)"),
            ("VmHWM", "peak RSS, anon + file"),
        ):
            print(f"  {name:8s} {peaks[name] / GB:6.2f} GB = {peaks[name] / checkpoint:.2f} x checkpoint  ({meaning})")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Sampler time per step, excluding the network, as a fraction of one network forward.

Runs STAR's default sampler (DPM-Solver++(2M) SDE, 'fast' mode, guidance 7.5 with
rescale, Brownian-tree noise) on the tiny-a UNet (dim 32, latent 1x4x6x18x16) on
the CPU, timing the network calls from inside the run. Whatever is left is the
sampler's own cost: timestep lookup, input scaling, guidance, v -> x0, joining
regions, the solver update, the Brownian noise and the NaN check. Baseline and
measurement come from the same run, so the ratio is comparable across machines.

    python benchmarks/sampler_overhead.py [--runs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from star_cli.diffusion import SamplerSettings, grid_regions, sample_window
from star_cli.models import STARUNet

TINY_A = dict(dim=32, head_dim=16, num_heads=8, num_res_blocks=2)
LATENT = (1, 4, 6, 18, 16)


class TimedDenoiser:
    """Calls the network and accumulates the wall time spent inside it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        v = self.model(x, t, y, hint=hint)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return v


def measure(model: torch.nn.Module, regions, settings: SamplerSettings, seed: int) -> tuple[float, float]:
    """(sampler seconds per step excluding the network, network seconds per forward) for one run."""
    generator = torch.Generator().manual_seed(seed)
    hint = torch.randn(LATENT, generator=generator)
    y, y_neg = torch.randn(2, 1, 77, 1024, generator=generator)
    denoise = TimedDenoiser(model)
    steps = len(settings.sigmas()) - 1
    start = time.perf_counter()
    sample_window(denoise, hint, y, y_neg, regions, settings, seed=seed)
    total = time.perf_counter() - start
    return (total - denoise.seconds) / steps, denoise.seconds / denoise.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="sampler runs per configuration (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = STARUNet(**TINY_A).eval()
    frames, height, width = LATENT[2:]
    configs = {
        "whole latent": grid_regions([(0, frames)], [(0, height)], [(0, width)], (frames, height, width)),
        "2 chunks x 2 tiles": grid_regions(
            [(0, 4), (2, 6)], [(0, height)], [(0, 8), (8, 16)], (frames, height, width), "cosine"
        ),
    }
    settings = SamplerSettings()
    with torch.no_grad():
        model(torch.zeros(LATENT), torch.zeros(1, dtype=torch.long), torch.zeros(1, 77, 1024), hint=torch.zeros(LATENT))
        print(f"tiny-a UNet, latent {'x'.join(map(str, LATENT))}, {args.threads} thread(s), {settings.solver} '{settings.mode}', "
              f"guide {settings.guide_scale}/{settings.guide_rescale}, eta {settings.eta}")
        for name, regions in configs.items():
            runs = [measure(model, regions, settings, seed) for seed in range(args.runs)]
            overhead = statistics.median(r[0] for r in runs)
            forward = statistics.median(r[1] for r in runs)
            print(f"{name:>22}: sampler {overhead * 1e3:7.2f} ms/step excluding the model, "
                  f"forward {forward * 1e3:7.2f} ms/call -> {overhead / forward:.3f} of a forward")


if __name__ == "__main__":
    main()

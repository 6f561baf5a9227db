"""The noise schedule and guidance scales of STAR's CogVideoX sampler, as the reference computes them.

CogVideoX uses a scaled-linear DDPM schedule (betas 0.00085..0.012 in sqrt space,
1000 steps) made zero-terminal-SNR by stretching sqrt(alpha_bar) linearly so its
last value is 0. The reference (SAT `ZeroSNRDDPMDiscretization`) does that stretch
twice, over different ranges, and uses both:

- the solver's alphas: only the `steps` selected timesteps are stretched (so the
  first selected one, t=19 for 50 steps, keeps its alpha);
- the denoiser's table: all 1000 timesteps are stretched (t=0 keeps its alpha);
  the x0 estimate at a step uses the table entry nearest to the step's alpha,
  which is the entry t-1 instead of t for the low-noise steps.

diffusers' `CogVideoXDPMScheduler` uses one table for both and differs by up to
1e-3 in alpha, enough to move the final latent by 2e-2; hence this module. The
arithmetic follows the reference's dtypes (float64 betas, float32 stretch) so every
constant is bit-identical. The classifier-free guidance scale is the reference's
timestep-dependent `DynamicCFG`, computed in Python floats (float64): float32
changes the cosine of the large powers it takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from star_cli.errors import InputError

NUM_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
STEPS = 50
GUIDE_SCALE = 6.0
GUIDE_EXPONENT = 5
GUIDE_STEPS = 50  # the guider's own `num_steps` (config), independent of the sampler's steps


@dataclass(frozen=True)
class CogVideoXSchedule:
    """Per-step constants of the sampler; step i denoises at `timesteps[i]` (descending)."""

    timesteps: torch.Tensor  # (N,) int64: 999, 979, ..., 19 for 50 steps
    alphas: torch.Tensor  # (N+1,) float32 sqrt(alpha_bar) of the solver, alphas[0] = 0, alphas[N] = 1
    alphas_quantized: torch.Tensor  # (N,) float32 sqrt(alpha_bar) used for the x0 estimate
    alphas_quantized_index: torch.Tensor  # (N,) int64 index of that entry in the 1000-step table
    cfg_scales: tuple[float, ...]  # (N,) guidance scale per step (Python floats)

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def _alphas_cumprod() -> np.ndarray:
    """alpha_bar of the scaled-linear schedule in float64 (betas from torch.linspace, as SAT's make_beta_schedule)."""
    betas = (torch.linspace(BETA_START**0.5, BETA_END**0.5, NUM_TIMESTEPS, dtype=torch.float64) ** 2).numpy()
    return np.cumprod(1.0 - betas, axis=0)


def zero_snr_sqrt(alphas_cumprod: np.ndarray) -> torch.Tensor:
    """sqrt(alpha_bar) in float32, stretched so the last entry is 0 and the first unchanged.

    The square root is taken in float64 and rounded once to float32, which is the
    correctly rounded float32 square root: torch's own float32 `sqrt` is 1 ulp off
    for some inputs on some CPUs (AVX-512 builds), and the constants must not
    depend on the machine.
    """
    s = torch.tensor(alphas_cumprod, dtype=torch.float32).double().sqrt().float()
    first, last = s[0].clone(), s[-1].clone()
    return (s - last) * (first / (first - last))


def dynamic_cfg_scale(timestep: int, steps: int = STEPS, scale: float = GUIDE_SCALE) -> float:
    """The reference's DynamicCFG scale: 1 + scale * (1 - cos(pi * (step_index / 50)**5)) / 2.

    The reference's sampler passes `step_index = steps - timestep` (not the step
    counter), so for 50 steps the base is (50 - t) / 50, about -19 at t=999, and the
    scales jump about between 1 and 1 + scale. That is what the model was run with.
    """
    step_index = steps - timestep
    return 1 + scale * (1 - math.cos(math.pi * (step_index / GUIDE_STEPS) ** GUIDE_EXPONENT)) / 2


@lru_cache(maxsize=4)
def cogvideox_schedule(steps: int = STEPS, guide_scale: float = GUIDE_SCALE) -> CogVideoXSchedule:
    """The sampler's constants for `steps` evenly spaced timesteps ending at 999 (cached; do not modify)."""
    if not 1 <= steps < NUM_TIMESTEPS:
        raise InputError(f"steps must be between 1 and {NUM_TIMESTEPS - 1}, got {steps}")
    alphas_cumprod = _alphas_cumprod()
    selected = np.linspace(NUM_TIMESTEPS - 1, 0, steps, endpoint=False).astype(int)[::-1].copy()
    alphas = torch.cat([zero_snr_sqrt(alphas_cumprod[selected]).flip(0), torch.ones(1)])
    table = zero_snr_sqrt(alphas_cumprod)
    index = (alphas[:-1, None] - table[None, :]).abs().argmin(dim=1)
    timesteps = torch.from_numpy(selected[::-1].copy()).long()
    return CogVideoXSchedule(
        timesteps=timesteps,
        alphas=alphas,
        alphas_quantized=table[index],
        alphas_quantized_index=index,
        cfg_scales=tuple(dynamic_cfg_scale(int(t), steps, guide_scale) for t in timesteps),
    )

"""k-diffusion style solvers, one small pure function each.

A solver only sees `x0_fn(x, sigma) -> x0` in the variance-exploding
parametrisation (x = x0 + sigma * eps): the network, guidance, chunking and
tiling are all behind that function, so the update rules here are the textbook
ones and can be checked on toy denoisers.

Every step checks its result for NaN/inf and raises a StarError naming the step,
because a single bad value would otherwise spread silently through the whole
video and only show up as a black or noisy output after decoding.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from star_cli.diffusion.noise import NoiseSampler
from star_cli.errors import StarError

X0Fn = Callable[[torch.Tensor, float], torch.Tensor]
StepCallback = Callable[[int, int], None]


def _check_finite(x: torch.Tensor, step: int, total: int) -> None:
    if not torch.isfinite(x).all():
        raise StarError(
            f"diffusion step {step + 1}/{total} produced NaN or inf values "
            "(try float32 instead of float16, or check the weights)"
        )


def _as_floats(sigmas: Sequence[float] | torch.Tensor) -> list[float]:
    return sigmas.tolist() if isinstance(sigmas, torch.Tensor) else [float(s) for s in sigmas]


@torch.no_grad()
def sample_dpmpp_2m_sde(
    x0_fn: X0Fn,
    x: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    *,
    eta: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE with the midpoint correction (Lu et al. 2022; k-diffusion).

    `x` starts at noise level sigmas[0] (already scaled); sigmas descend to 0, and
    the step to 0 returns the denoiser's estimate. eta=0 gives the deterministic
    2M ODE solver; eta>0 needs a `noise_sampler(sigma, sigma_next)`.
    """
    if eta > 0 and noise_sampler is None:
        raise ValueError("eta > 0 needs a noise_sampler")
    sigmas = _as_floats(sigmas)
    total = len(sigmas) - 1
    old_denoised: torch.Tensor | None = None
    h_last = 0.0
    for i in range(total):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = x0_fn(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            eta_h = eta * h
            x = (sigma_next / sigma * math.exp(-eta_h)) * x - math.expm1(-h - eta_h) * denoised
            if old_denoised is not None:
                x = x - (0.5 * math.expm1(-h - eta_h) * h / h_last) * (denoised - old_denoised)
            if eta > 0:
                x = x + noise_sampler(sigma, sigma_next) * (sigma_next * math.sqrt(-math.expm1(-2 * eta_h)))
            h_last = h
        old_denoised = denoised
        _check_finite(x, i, total)
        if callback is not None:
            callback(i, total)
    return x


@torch.no_grad()
def sample_heun(
    x0_fn: X0Fn,
    x: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    *,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Heun's second-order ODE method (Karras et al. 2022, Algorithm 2 without churn).

    The step to sigma=0 is a plain Euler step: there is no second evaluation at 0.
    """
    sigmas = _as_floats(sigmas)
    total = len(sigmas) - 1
    for i in range(total):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = (x - x0_fn(x, sigma)) / sigma
        x_euler = x + d * (sigma_next - sigma)
        if sigma_next == 0:
            x = x_euler
        else:
            d_next = (x_euler - x0_fn(x_euler, sigma_next)) / sigma_next
            x = x + (d + d_next) * ((sigma_next - sigma) / 2)
        _check_finite(x, i, total)
        if callback is not None:
            callback(i, total)
    return x

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


StepX0Fn = Callable[[torch.Tensor, int], torch.Tensor]
NoiseFn = Callable[[], torch.Tensor]


def _half_log_snr(alpha: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha / sigma) for VP sqrt(alpha_bar) `alpha`; -inf at alpha = 0 (zero SNR)."""
    alpha_bar = alpha**2
    return ((alpha_bar / (1 - alpha_bar)) ** 0.5).log()


@torch.no_grad()
def sample_vp_dpmpp_2m_sde(
    x0_fn: StepX0Fn,
    x: torch.Tensor,
    alphas: torch.Tensor,
    *,
    noise: NoiseFn,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE in the VP parametrisation, as CogVideoX's reference sampler runs it.

    `alphas` (N+1,) are sqrt(alpha_bar) per step (float32, alphas[N] = 1); `x` is the
    state at alphas[0] (unscaled noise when alphas[0] = 0, zero SNR). `x0_fn(x, i)` is
    the denoiser's (guided) x0 estimate at step i; the last step returns it as the
    result. Unlike the VE solvers, a zero-SNR start is fine here: lambda = -inf gives
    the first-order step x = alpha_next * x0 + sigma_next * noise exactly.

    `noise()` returns the next standard-normal tensor shaped like x. It is called in
    the reference's order, so a generator seeded as the reference was reproduces its
    run: once at step 0, twice at steps 1..N-2 (the first draw, made by the reference
    for a first-order update it then discards, is discarded), never at the last step.
    The coefficients are float32 0-dim tensors computed in the reference's order.
    """
    total = len(alphas) - 1
    old_x0: torch.Tensor | None = None
    for i in range(total):
        x0 = x0_fn(x, i)
        if i == total - 1:
            x = x0
        else:
            alpha, alpha_next = alphas[i], alphas[i + 1]
            lam = _half_log_snr(alpha)
            h = _half_log_snr(alpha_next) - lam
            mult_x = ((1 - alpha_next**2) / (1 - alpha**2)) ** 0.5 * (-h).exp()
            mult_x0 = (-2 * h).expm1() * alpha_next
            mult_noise = (1 - alpha_next**2) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5
            eps = noise()
            if old_x0 is not None:
                r = (lam - _half_log_snr(alphas[i - 1])) / h
                x0_d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
                eps = noise()
            else:
                x0_d = x0
            x = mult_x * x - mult_x0 * x0_d + mult_noise * eps
        old_x0 = x0
        _check_finite(x, i, total)
        if callback is not None:
            callback(i, total)
    return x

"""Blur and sinc kernels of the Real-ESRGAN degradation model, sampled from a seeded RNG.

Real-ESRGAN (basicsr.data.degradations) draws one kernel per image from six shapes
(isotropic / anisotropic Gaussian, generalised Gaussian, plateau) or, rarely, a 2-D
sinc (ringing and overshoot). We draw one kernel per *clip*, so every frame of a
training clip is blurred alike, as a real camera or scaler would do.
All parameters come from a `numpy.random.Generator`, so a clip's degradation is a
pure function of its seed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from star_cli.train.config import StageConfig

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
PADDED_SIZE = 21  # every kernel is zero-padded to this size, like the reference


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def shaped_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, *, shape: str = "gaussian",
                  beta: float = 1.0) -> torch.Tensor:
    """A normalised (size, size) kernel from the quadratic form of a rotated covariance.

    gaussian: exp(-Q/2); generalized: exp(-Q^beta/2); plateau: 1/(Q^beta + 1), with
    Q = [x y] Sigma^-1 [x y]^T and Sigma = R diag(sx^2, sy^2) R^T.
    """
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy  # coordinates in the kernel's principal axes
    v = -s * xx + c * yy
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    if shape == "gaussian":
        kernel = torch.exp(-0.5 * q)
    elif shape == "generalized":
        kernel = torch.exp(-0.5 * q.pow(beta))
    elif shape == "plateau":
        kernel = 1.0 / (q.pow(beta) + 1.0)
    else:
        raise ValueError(f"unknown kernel shape {shape!r}")
    return (kernel / kernel.sum()).float()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """Circularly symmetric 2-D low-pass (jinc) kernel; `cutoff` in radians, pi = Nyquist."""
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe_r) / (2 * math.pi * safe_r)
    kernel = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), kernel)
    return (kernel / kernel.sum()).float()


def pad_kernel(kernel: torch.Tensor, size: int = PADDED_SIZE) -> torch.Tensor:
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad))


def _beta(rng: np.random.Generator, low: float, high: float) -> float:
    """Reference rule: half the time below 1 (heavier tails), half above 1 (flatter top)."""
    if rng.uniform() < 0.5:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(1.0, high))


def _sinc_cutoff(rng: np.random.Generator, size: int) -> float:
    # Small kernels cannot represent very low cut-offs, so their range starts higher.
    return float(rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi))


def random_blur_kernel(rng: np.random.Generator, stage: StageConfig) -> torch.Tensor:
    """One blur kernel for a degradation stage, padded to 21x21."""
    size = int(rng.choice(stage.kernel_sizes))
    if rng.uniform() < stage.sinc_prob:
        return pad_kernel(sinc_kernel(size, _sinc_cutoff(rng, size)))
    probs = np.asarray(stage.kernel_probs, dtype=np.float64)
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=probs / probs.sum()))]
    sigma_x = float(rng.uniform(*stage.blur_sigma))
    if kind.endswith("aniso"):
        sigma_y = float(rng.uniform(*stage.blur_sigma))
        theta = float(rng.uniform(-math.pi, math.pi))
    else:
        sigma_y, theta = sigma_x, 0.0
    if kind.startswith("generalized"):
        kernel = shaped_kernel(size, sigma_x, sigma_y, theta, shape="generalized", beta=_beta(rng, *stage.betag_range))
    elif kind.startswith("plateau"):
        kernel = shaped_kernel(size, sigma_x, sigma_y, theta, shape="plateau", beta=_beta(rng, *stage.betap_range))
    else:
        kernel = shaped_kernel(size, sigma_x, sigma_y, theta)
    return pad_kernel(kernel)


def random_final_sinc(rng: np.random.Generator, probability: float, kernel_sizes: tuple[int, ...]) -> torch.Tensor | None:
    """The final sinc filter of the reference (None = identity, skipped)."""
    if rng.uniform() >= probability:
        return None
    size = int(rng.choice(kernel_sizes))
    return pad_kernel(sinc_kernel(size, float(rng.uniform(math.pi / 3, math.pi))))


def fast_fft_length(n: int) -> int:
    """The smallest length >= n with no prime factor above 5 (FFTs of such lengths are fast)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def filter2d(frames: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter every channel of (N, C, H, W) frames with one (k, k) kernel, through the FFT.

    All our kernels are point-symmetric, so convolution equals the reference's
    correlation. Padding replicates the edge (unlike reflection it works on frames
    smaller than the kernel), by k-1 in total, and the FFT length is at least the
    padded size, so the circular product wraps nothing into the kept window. On a
    CPU this is many times faster than a direct 21x21 (or USM's 101x101) convolution.
    """
    n, c, h, w = frames.shape
    r = kernel.shape[-1] // 2
    padded = F.pad(frames.reshape(n * c, 1, h, w), (r, r, r, r), mode="replicate")[:, 0]
    size = (fast_fft_length(padded.shape[-2]), fast_fft_length(padded.shape[-1]))
    spectrum = torch.fft.rfft2(padded.float(), s=size) * torch.fft.rfft2(kernel.to(padded.device, torch.float32), s=size)
    out = torch.fft.irfft2(spectrum, s=size)[:, 2 * r:2 * r + h, 2 * r:2 * r + w]
    return out.reshape(n, c, h, w).to(frames.dtype)

"""STAR's 1000-step VP noise schedule and every conversion that depends on it.

STAR (like I2VGen-XL and VEnhancer) trains on a variance-preserving process
``x_t = alpha_t * x0 + sigma_t * eps`` with ``alpha_t**2 + sigma_t**2 = 1`` and
v-prediction ``v = alpha_t * eps - sigma_t * x0``. Its samplers, however, are
k-diffusion solvers working in the variance-exploding parametrisation
``x = x0 + s * eps`` with ``s = sigma_t / alpha_t``. Both views, and the mapping
between a continuous VE sigma and the integer timestep the network was trained
on, are computed here from one tensor of VP sigmas, so training and sampling can
never disagree about the schedule.

The schedule is computed in float32 in the same operation order as the reference:
the solver's timesteps are recovered from sigmas and rounded, so matching the
reference's arithmetic keeps every rounded timestep identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from star_cli.errors import InputError

NUM_TIMESTEPS = 1000
FAST_MODE_T_MID = 500
FAST_MODE_STEPS = (4, 11)
SOLVER_MODES = ("fast", "normal")


def _logsnr_cosine(n: int, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    """Cosine log-SNR from logsnr_max (t=0) down to logsnr_min (t=n-1)."""
    t_min = math.atan(math.exp(-0.5 * logsnr_min))
    t_max = math.atan(math.exp(-0.5 * logsnr_max))
    t = torch.linspace(1, 0, n)
    return -2 * torch.log(torch.tan(t_min + t * (t_max - t_min)))


def _logsnr_cosine_shifted(n: int, logsnr_min: float, logsnr_max: float, scale: float) -> torch.Tensor:
    """The cosine log-SNR shifted for a resolution `scale` times larger (less signal)."""
    return _logsnr_cosine(n, logsnr_min, logsnr_max) + 2 * math.log(1 / scale)


def logsnr_cosine_interp_sigmas(
    n: int = NUM_TIMESTEPS,
    logsnr_min: float = -15.0,
    logsnr_max: float = 15.0,
    scale_min: float = 2.0,
    scale_max: float = 4.0,
) -> torch.Tensor:
    """VP sigmas of the 'logsnr_cosine_interp' schedule.

    The log-SNR is shifted by `scale_min` at t=0 and by `scale_max` at t=n-1, and
    interpolated linearly in between: low noise levels look like a small shift,
    high noise levels like a large one.
    """
    t = torch.linspace(1, 0, n)
    low = _logsnr_cosine_shifted(n, logsnr_min, logsnr_max, scale_min)
    high = _logsnr_cosine_shifted(n, logsnr_min, logsnr_max, scale_max)
    logsnrs = t * low + (1 - t) * high
    return torch.sqrt(torch.sigmoid(-logsnrs))


def rescale_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Stretch VP sigmas linearly so the last one is exactly 1 (pure noise at t=n-1)."""
    if sigmas.max() == 1.0:
        return sigmas
    low = sigmas.min()
    scale = (1.0 - low) / (sigmas.max() - low)
    return low + scale * (sigmas - low)


def _expand_like(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample scalars (B,) shaped (B,1,...,1) to broadcast against x."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete VP schedule: `sigmas[t]` is the noise std at integer timestep t."""

    sigmas: torch.Tensor

    @property
    def alphas(self) -> torch.Tensor:
        return torch.sqrt(1 - self.sigmas**2)

    @property
    def log_ve_sigmas(self) -> torch.Tensor:
        """log(sigma/alpha) per timestep, increasing; +inf at a zero-SNR last step."""
        return torch.sqrt(self.sigmas**2 / (1 - self.sigmas**2)).log()

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_t for integer timesteps `t` (any shape), on t's device."""
        return self.alphas.to(t.device)[t]

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t (VP) for integer timesteps `t` (any shape), on t's device."""
        return self.sigmas.to(t.device)[t]


@lru_cache(maxsize=1)
def star_schedule() -> NoiseSchedule:
    """The schedule STAR was trained with (computed once per process)."""
    return NoiseSchedule(rescale_zero_terminal_snr(logsnr_cosine_interp_sigmas()))


def sigma_to_t(sigma: torch.Tensor, schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """Continuous timestep for VE sigma(s), by linear interpolation in log-sigma."""
    schedule = schedule or star_schedule()
    log_sigmas = schedule.log_ve_sigmas.to(sigma.device)
    log_sigma = sigma.float().log()
    low_idx = (torch.searchsorted(log_sigmas, log_sigma.reshape(-1), right=True) - 1).clamp(0, len(log_sigmas) - 2)
    low, high = log_sigmas[low_idx], log_sigmas[low_idx + 1]
    w = ((low - log_sigma.reshape(-1)) / (low - high)).clamp(0, 1)
    return ((1 - w) * low_idx + w * (low_idx + 1)).view(sigma.shape)


def t_to_sigma(t: torch.Tensor, schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """VE sigma for continuous timestep(s), by linear interpolation in log-sigma."""
    schedule = schedule or star_schedule()
    t = t.float()
    log_sigmas = schedule.log_ve_sigmas.to(t.device)
    w = t.frac()
    log_sigma = (1 - w) * log_sigmas[t.floor().long()] + w * log_sigmas[t.ceil().long()]
    return torch.where(torch.isfinite(log_sigma), log_sigma, torch.inf).exp()


def _trailing(t_max: float, t_min: float, steps: int) -> torch.Tensor:
    """'trailing' discretisation: `steps` timesteps from t_max down, evenly spaced."""
    return torch.arange(t_max, t_min - 1, -((t_max - t_min + 1) / steps))


def solver_timesteps(mode: str, steps: int, t_max: int, t_min: int) -> torch.Tensor:
    """Timesteps (float, descending) the solver visits.

    'normal' spaces `steps` timesteps evenly; 'fast' ignores `steps` and spends
    4 steps above t=500 and 11 below, where the detail is decided.
    """
    if mode not in SOLVER_MODES:
        raise InputError(f"unknown solver mode {mode!r}: choose one of {', '.join(SOLVER_MODES)}")
    if not 0 <= t_min < t_max < NUM_TIMESTEPS - 1:
        raise InputError(f"need 0 <= t_min < t_max < {NUM_TIMESTEPS - 1}, got t_min={t_min}, t_max={t_max}")
    if mode == "fast":
        if not t_min < FAST_MODE_T_MID < t_max:
            raise InputError(f"solver mode 'fast' needs t_min < {FAST_MODE_T_MID} < t_max, got {t_min}..{t_max}")
        above, below = FAST_MODE_STEPS
        timesteps = torch.cat([_trailing(t_max, FAST_MODE_T_MID, above), _trailing(FAST_MODE_T_MID, t_min, below)])
    else:
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        timesteps = _trailing(t_max, t_min, steps)
    return timesteps.clamp(t_min, t_max)


def solver_sigmas(
    mode: str,
    steps: int,
    t_max: int,
    t_min: int,
    *,
    discard_penultimate: bool = True,
    schedule: NoiseSchedule | None = None,
) -> torch.Tensor:
    """Descending VE sigmas ending in 0 for a k-diffusion solver.

    With `discard_penultimate` (DPM-Solver++(2M) SDE) one extra timestep is
    planned and the smallest non-zero sigma dropped, so the last step jumps
    straight to 0 from a moderate noise level, as the reference does.
    """
    timesteps = solver_timesteps(mode, steps + int(discard_penultimate), t_max, t_min)
    sigmas = torch.cat([t_to_sigma(timesteps, schedule), timesteps.new_zeros(1)])
    if discard_penultimate:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """Diffuse clean latents to timesteps t (B,): alpha_t * x0 + sigma_t * noise."""
    schedule = schedule or star_schedule()
    return _expand_like(schedule.alpha(t), x0) * x0 + _expand_like(schedule.sigma(t), x0) * noise


def v_to_x0(v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """Clean latent from a v-prediction at timesteps t (B,): alpha_t * x_t - sigma_t * v."""
    schedule = schedule or star_schedule()
    return _expand_like(schedule.alpha(t), x_t) * x_t - _expand_like(schedule.sigma(t), x_t) * v


def x0_eps_to_v(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """The v-prediction target for (x0, eps) at timesteps t (B,): alpha_t * eps - sigma_t * x0."""
    schedule = schedule or star_schedule()
    return _expand_like(schedule.alpha(t), x0) * eps - _expand_like(schedule.sigma(t), x0) * x0

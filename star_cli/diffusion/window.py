"""Sampling one window of a video: STAR's SDEdit-style restoration of an LR latent.

The LR latent (the hint) is diffused to t_max, scaled into VE space by the first
solver sigma, and denoised by the chosen solver; at every step each region
(temporal chunk x spatial tile) is denoised on its own and the x0 estimates are
joined (see `tiled`).

Why windows: joining per step needs the latents of every chunk at once, so a
whole long video would have to sit in memory for the whole run. Instead the
engine cuts the video into windows (contiguous frame ranges of a few chunks,
overlapping their neighbours), calls `sample_window` for each with regions and
hint local to that window, decodes, and cross-fades the overlaps of decoded
windows. Memory is then bounded by one window: its latent x, the previous and
current x0 estimates, the join buffer, the Brownian tree's cache and one
region's network activations; the video's length only adds time. All noise of
a window comes from its `NoiseSource`, by default seeded from (seed, window
index), so windows are independent and reproducible in any order; a
`RecordedNoise` replays a recorded run's draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from star_cli.diffusion.guidance import Denoiser, model_x0_fn
from star_cli.diffusion.noise import NoiseSource, SeededNoise
from star_cli.diffusion.samplers import StepCallback, X0Fn, sample_dpmpp_2m_sde, sample_heun
from star_cli.diffusion.schedule import NoiseSchedule, q_sample, solver_sigmas, star_schedule
from star_cli.diffusion.tiled import Region, joined_x0_fn
from star_cli.errors import InputError

SOLVERS = ("dpmpp_2m_sde", "heun")


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample; defaults are the reference's STAR inference settings."""

    solver: str = "dpmpp_2m_sde"
    mode: str = "fast"
    steps: int = 15
    t_max: int = 899
    t_min: int = 0
    guide_scale: float = 7.5
    guide_rescale: float = 0.2
    eta: float = 1.0
    batch_guidance: bool = False  # cond + uncond as one batch of 2: faster, twice the activations

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise InputError(f"unknown solver {self.solver!r}: choose one of {', '.join(SOLVERS)}")
        if self.eta < 0:
            raise InputError(f"eta must be >= 0, got {self.eta}")
        if not 0 <= self.guide_rescale <= 1:
            raise InputError(f"guide rescale must be in [0, 1], got {self.guide_rescale}")

    def sigmas(self, schedule: NoiseSchedule | None = None) -> torch.Tensor:
        """The solver's VE sigmas, the penultimate one discarded for DPM-Solver++(2M) SDE."""
        return solver_sigmas(
            self.mode,
            self.steps,
            self.t_max,
            self.t_min,
            discard_penultimate=self.solver == "dpmpp_2m_sde",
            schedule=schedule,
        )


def noised_hint(
    hint: torch.Tensor, settings: SamplerSettings, noise: NoiseSource, schedule: NoiseSchedule | None = None
) -> torch.Tensor:
    """The LR latent diffused to t_max (VP: alpha*z + sigma*noise), the noise from `noise.start`."""
    drawn = noise.start(tuple(hint.shape), hint.device)
    t_start = torch.full((hint.shape[0],), settings.t_max, dtype=torch.long, device=hint.device)
    return q_sample(hint.float(), t_start, drawn, schedule)


def sample_window(
    denoise: Denoiser,
    hint: torch.Tensor,
    context: torch.Tensor,
    negative_context: torch.Tensor | None,
    regions: Sequence[Region],
    settings: SamplerSettings,
    *,
    seed: int,
    window: int = 0,
    noise: NoiseSource | None = None,
    noised: torch.Tensor | None = None,
    schedule: NoiseSchedule | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Restore one window: its LR latent `hint` (B, C, F, H, W) -> the sampled latent (float32).

    `regions` tile the window's (F, H, W) (see `tiled.grid_regions`); the network
    sees each region's crop of x and of the hint. `noise` gives the start and SDE noise
    (default: `SeededNoise(seed, window)`); `noised` overrides the whole start
    (`noised_hint`), e.g. to replay a run recorded after its noising.
    """
    schedule = schedule or star_schedule()
    noise = noise or SeededNoise(seed, window)
    hint = hint.float()
    if noised is None:
        noised = noised_hint(hint, settings, noise, schedule)
    sigmas = settings.sigmas(schedule)
    x = noised.to(hint) * sigmas[0].item()

    def region_x0_fn(region: Region) -> X0Fn:
        return model_x0_fn(
            denoise,
            context,
            negative_context,
            region.crop(hint),
            guide_scale=settings.guide_scale,
            guide_rescale=settings.guide_rescale,
            batch_guidance=settings.batch_guidance,
            schedule=schedule,
        )

    x0_fn = joined_x0_fn(regions, region_x0_fn, tuple(hint.shape[2:]), hint.device)
    if settings.solver == "heun":
        return sample_heun(x0_fn, x, sigmas, callback=callback)
    positive = sigmas[sigmas > 0]
    noise_sampler = noise.sde(x, positive.min().item(), positive.max().item()) if settings.eta > 0 else None
    return sample_dpmpp_2m_sde(x0_fn, x, sigmas, eta=settings.eta, noise_sampler=noise_sampler, callback=callback)

"""STAR's diffusion: noise schedule, k-diffusion solvers, guidance, chunked/tiled joining.

Layers, each usable on its own:
- `schedule`: the 1000-step VP schedule, sigma <-> timestep, solver sigmas, v/x0/eps conversions;
- `samplers`: solvers over `x0_fn(x, sigma)` in VE space;
- `guidance`: a v-prediction network + classifier-free guidance -> `x0_fn`;
- `tiled`: regions (chunk x tile) and the per-step weighted join of their x0 estimates;
- `noise`: seeded start noise and Brownian-tree SDE noise per (seed, window);
- `window`: `sample_window`, everything above for one window of a video.
"""

from __future__ import annotations

from star_cli.diffusion.guidance import Denoiser, combine_guidance, model_x0_fn
from star_cli.diffusion.samplers import X0Fn, sample_dpmpp_2m_sde, sample_heun
from star_cli.diffusion.schedule import (
    NoiseSchedule,
    q_sample,
    sigma_to_t,
    solver_sigmas,
    star_schedule,
    t_to_sigma,
    v_to_x0,
    x0_eps_to_v,
)
from star_cli.diffusion.tiled import Region, grid_regions, joined_x0_fn
from star_cli.diffusion.window import SamplerSettings, noised_hint, sample_window

__all__ = [
    "Denoiser",
    "NoiseSchedule",
    "Region",
    "SamplerSettings",
    "X0Fn",
    "combine_guidance",
    "grid_regions",
    "joined_x0_fn",
    "model_x0_fn",
    "noised_hint",
    "q_sample",
    "sample_dpmpp_2m_sde",
    "sample_heun",
    "sample_window",
    "sigma_to_t",
    "solver_sigmas",
    "star_schedule",
    "t_to_sigma",
    "v_to_x0",
    "x0_eps_to_v",
]

"""Sampling with STAR's CogVideoX denoiser: the reference's x0 estimate, dynamic CFG and solver.

The network predicts v. The reference turns it into x0 with the *quantized* alpha
(the nearest entry of the 1000-step table, see `cogvideox_schedule`), not the
solver's alpha, and applies classifier-free guidance on x0 with a scale that
depends on the timestep. The negative context is all zeros, not an encoded empty
prompt. Both halves go through the network as one batch of 2 by default, as in the
reference (`batched=False`: two calls, half the activation memory).

The denoiser is any callable with our DiT's signature,
`denoise(x_noisy, lr_latent, timesteps, context) -> v`, latents `b t c h w`; it
may return another float dtype (bf16): the sampler's maths stays float32, as the
reference's does.
"""

from __future__ import annotations

from typing import Callable

import torch

from star_cli.diffusion.cogvideox_schedule import CogVideoXSchedule, cogvideox_schedule
from star_cli.diffusion.samplers import NoiseFn, StepCallback, StepX0Fn, sample_vp_dpmpp_2m_sde

VDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cogvideox_x0_fn(
    denoise: VDenoiser,
    lr_latent: torch.Tensor,
    context: torch.Tensor,
    negative_context: torch.Tensor | None = None,
    schedule: CogVideoXSchedule | None = None,
    *,
    batched: bool = True,
) -> StepX0Fn:
    """`x0_fn(x, step)`: the guided x0 estimate for latents x (b t c h w) at a step of `schedule`.

    `lr_latent` (b t c h w, already scaled by 0.7) and `context` (b, tokens, dim) belong
    to the latents this x0_fn is called on; `negative_context` None means zeros.
    """
    schedule = schedule or cogvideox_schedule()
    negative = torch.zeros_like(context) if negative_context is None else negative_context

    def x0_fn(x: torch.Tensor, step: int) -> torch.Tensor:
        timesteps = x.new_full((x.shape[0],), float(schedule.timesteps[step]))
        lr = lr_latent.to(x)
        if batched:
            both = (torch.cat([x, x]), torch.cat([lr, lr]), torch.cat([timesteps, timesteps]))
            v = denoise(*both, torch.cat([negative, context]))
            v_uncond, v_cond = v.to(torch.float32).chunk(2)
        else:
            v_uncond = denoise(x, lr, timesteps, negative).to(torch.float32)
            v_cond = denoise(x, lr, timesteps, context).to(torch.float32)
        alpha = schedule.alphas_quantized[step]
        c_out = -((1 - alpha**2) ** 0.5)
        x0_uncond = v_uncond * c_out + x * alpha
        x0_cond = v_cond * c_out + x * alpha
        return x0_uncond + schedule.cfg_scales[step] * (x0_cond - x0_uncond)

    return x0_fn


def sample_cogvideox(
    denoise: VDenoiser,
    x: torch.Tensor,
    lr_latent: torch.Tensor,
    context: torch.Tensor,
    negative_context: torch.Tensor | None = None,
    *,
    noise: NoiseFn,
    schedule: CogVideoXSchedule | None = None,
    batched: bool = True,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The reference's `sample_sr`: from unscaled noise `x` (b t c h w) to the clean latent (float32).

    `noise()` gives the solver's standard-normal draws (see `sample_vp_dpmpp_2m_sde`).
    """
    schedule = schedule or cogvideox_schedule()
    x0_fn = cogvideox_x0_fn(denoise, lr_latent, context, negative_context, schedule, batched=batched)
    return sample_vp_dpmpp_2m_sde(x0_fn, x.to(torch.float32), schedule.alphas, noise=noise, callback=callback)

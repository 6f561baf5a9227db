"""From a v-prediction network to the solvers' `x0_fn`, with classifier-free guidance.

The network is any callable `denoise(x_t, t, context, hint) -> v` working in
STAR's VP space: it gets x_t = x / sqrt(sigma**2 + 1) and the integer timestep
whose VE sigma is closest in log-sigma (rounded, as the reference does), and its
v is turned into x0 with that timestep's alpha and sigma.

Guidance follows the reference: u + s * (c - u), then the result is pulled back
towards the conditional prediction's standard deviation (per sample, over all of
C, F, H, W) by `rescale`, which keeps a large guide scale from over-saturating.
Scale 1.0 is the conditional prediction itself, so the unconditional pass is
skipped. The two passes can run as one batch of 2 (faster on a GPU, twice the
activation memory).
"""

from __future__ import annotations

from typing import Callable

import torch

from star_cli.diffusion.samplers import X0Fn
from star_cli.diffusion.schedule import NoiseSchedule, sigma_to_t, star_schedule, v_to_x0

# denoise(x_t (B,C,F,H,W) float32, t (B,) long, context (B,tokens,dim), hint (B,C,F,H,W)) -> v.
# It casts to its own device/dtype; v may come back in any float dtype.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def combine_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float, rescale: float) -> torch.Tensor:
    """u + scale * (c - u), its per-sample std pulled towards c's by `rescale`."""
    out = uncond + scale * (cond - uncond)
    if rescale == 0:
        return out
    ratio = cond.flatten(1).std(dim=1) / (out.flatten(1).std(dim=1) + 1e-12)
    return out * (rescale * ratio + (1 - rescale)).view(-1, *([1] * (out.ndim - 1)))


def guided_v(
    denoise: Denoiser,
    x_t: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    negative_context: torch.Tensor | None,
    hint: torch.Tensor,
    *,
    scale: float,
    rescale: float,
    batched: bool,
) -> torch.Tensor:
    """The guided v-prediction in x_t's dtype: one network call at scale 1, else two (or one batch of 2)."""

    def call(x: torch.Tensor, steps: torch.Tensor, ctx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return denoise(x, steps, ctx, h).to(x_t.dtype)

    if scale == 1.0:
        return call(x_t, t, context, hint)
    if negative_context is None:
        raise ValueError(f"guidance scale {scale} needs a negative context")
    if batched:
        both = call(
            torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([context, negative_context]), torch.cat([hint, hint])
        )
        cond, uncond = both.chunk(2)
    else:
        cond = call(x_t, t, context, hint)
        uncond = call(x_t, t, negative_context, hint)
    return combine_guidance(cond, uncond, scale, rescale)


def model_x0_fn(
    denoise: Denoiser,
    context: torch.Tensor,
    negative_context: torch.Tensor | None,
    hint: torch.Tensor,
    *,
    guide_scale: float,
    guide_rescale: float,
    batch_guidance: bool = False,
    schedule: NoiseSchedule | None = None,
) -> X0Fn:
    """Wrap a VP v-prediction network (plus guidance) as a VE-space `x0_fn(x, sigma)`.

    `hint` must already be cropped to the latents this x0_fn will be called on;
    `context` (B, tokens, dim) is per sample, shared by every frame.
    """
    schedule = schedule or star_schedule()

    def x0_fn(x: torch.Tensor, sigma: float) -> torch.Tensor:
        sigma_tensor = torch.tensor(sigma, dtype=torch.float32)
        t = sigma_to_t(sigma_tensor, schedule).round().long().repeat(x.shape[0]).to(x.device)
        x_t = x * (sigma**2 + 1) ** -0.5
        v = guided_v(
            denoise, x_t, t, context, negative_context, hint, scale=guide_scale, rescale=guide_rescale, batched=batch_guidance
        )
        return v_to_x0(v, x_t, t, schedule)

    return x0_fn

"""The CogVideoX 3D VAE as STAR's reference uses it, on diffusers' `AutoencoderKLCogVideoX`.

Three settings of the reference differ from diffusers' pipeline defaults and matter:
- the whole clip is encoded in one pass: the encoder's GroupNorms take their
  statistics over all frames, so encoding in diffusers' default 8-frame batches
  moves the posterior mean by more than 1;
- the posterior is *sampled* (mean + std * noise), not its mode, and scaled by 0.7;
- decoding multiplies by the Python double 1/0.7 (not a division by 0.7) and runs in
  latent groups [0:3], [3:5], [5:7], which is diffusers' 2-frame batching for an odd
  number of latent frames; the causal-conv cache carries across groups.

The VAE weights come from the CogVideoX-5B release in diffusers' layout; the
SAT-to-diffusers key mapping (fixture README section 4.2) is here for checkpoints
in the reference's naming. Tensors are (b, c, t, h, w), pixels in [-1, 1]; results
are float32 whatever the VAE's dtype.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import torch
from diffusers import AutoencoderKLCogVideoX
from torch import Tensor

LATENT_SCALE = 0.7
DECODE_LATENT_FRAMES = 2  # diffusers' batching that gives the reference's [0:3], [3:5], [5:7]
_LEVELS = 4

_SAT_VAE_RULES = (
    (re.compile(r"^(encoder|decoder)\.mid\.block_1\."), r"\1.mid_block.resnets.0."),
    (re.compile(r"^(encoder|decoder)\.mid\.block_2\."), r"\1.mid_block.resnets.1."),
    (re.compile(r"\.block\."), ".resnets."),
    (re.compile(r"^encoder\.down\."), "encoder.down_blocks."),
    (re.compile(r"\.downsample\."), ".downsamplers.0."),
    (re.compile(r"\.upsample\."), ".upsamplers.0."),
    (re.compile(r"\.nin_shortcut\."), ".conv_shortcut."),
)
_SAT_DECODER_LEVEL = re.compile(r"^decoder\.up\.(\d+)\.")


def sat_vae_key(name: str, levels: int = _LEVELS) -> str | None:
    """The diffusers name of a SAT VAE tensor; None for the training loss's tensors (`loss.*`).

    SAT stores the decoder's levels in reverse order: `decoder.up.{i}` is
    `decoder.up_blocks.{levels-1-i}`.
    """
    if name.startswith("loss."):
        return None
    for pattern, replacement in _SAT_VAE_RULES:
        name = pattern.sub(replacement, name)
    return _SAT_DECODER_LEVEL.sub(lambda m: f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.", name)


def convert_sat_vae_state_dict(state_dict: Mapping[str, Tensor], levels: int = _LEVELS) -> Iterator[tuple[str, Tensor]]:
    """(diffusers name, tensor) for every SAT VAE tensor but the loss's, one at a time."""
    for name in state_dict.keys():
        target = sat_vae_key(name, levels)
        if target is not None:
            yield target, state_dict[name]


def encode_posterior(vae: AutoencoderKLCogVideoX, video: Tensor) -> tuple[Tensor, Tensor]:
    """The encoder's (mean, logvar) for a whole clip (b, 3, T, H, W) in one pass; logvar not yet clamped."""
    frames_per_batch = vae.num_sample_frames_batch_size
    vae.num_sample_frames_batch_size = video.shape[2]
    try:
        posterior = vae.encode(video.to(vae.dtype)).latent_dist
    finally:
        vae.num_sample_frames_batch_size = frames_per_batch
    mean, logvar = posterior.parameters.float().chunk(2, dim=1)
    return mean, logvar


def encode_video(
    vae: AutoencoderKLCogVideoX, video: Tensor, *, noise: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """The scaled LR latent (b, 16, t, H/8, W/8): a posterior sample times 0.7, as the reference encodes.

    `noise` (the posterior's shape) is the standard-normal draw; without it one is drawn
    from `generator` on the generator's device (the CPU by default) and moved.
    """
    mean, logvar = encode_posterior(vae, video)
    if noise is None:
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(mean.shape, generator=generator, device=device, dtype=torch.float32)
    latent = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise.to(mean)
    return vae.config.scaling_factor * latent


def decode_latent(vae: AutoencoderKLCogVideoX, latent: Tensor) -> Tensor:
    """Frames (b, 3, T, H, W) in about [-1, 1] (not clamped) from a scaled latent (b, 16, t, h, w)."""
    frames_per_batch = vae.num_latent_frames_batch_size
    vae.num_latent_frames_batch_size = DECODE_LATENT_FRAMES
    try:
        decoded = vae.decode(((1.0 / vae.config.scaling_factor) * latent).to(vae.dtype)).sample
    finally:
        vae.num_latent_frames_batch_size = frames_per_batch
    return decoded.float()

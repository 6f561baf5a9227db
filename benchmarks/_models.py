"""Randomly initialised STAR components of real size, built straight on a device (or on meta).

The benchmarks measure shapes, memory and speed, never quality, so they need no
weights file: the UNet + ControlNet (STARConfig's defaults are the released model),
the temporal VAE with Stable Video Diffusion's configuration and the OpenCLIP ViT-H/14
text tower are built from their configurations. `tiny=True` gives the tiny shapes of
`star_cli.testing.weights` (seconds on a CPU).

Construction runs under the target device and dtype, so a 2-billion-parameter UNet
never exists in float32 on the host: on a GPU it takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import AutoencoderKLTemporalDecoder
from transformers import CLIPTextConfig, CLIPTextModel

from star_cli.models import STARUNet
from star_cli.testing.weights import TINY_TEXT, TINY_UNET, TINY_VAE, randomise_zero_parameters

# diffusers' stabilityai/stable-video-diffusion-img2vid vae/config.json (the rest are the class defaults).
SVD_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    scaling_factor=0.18215,
)
# OpenCLIP ViT-H/14's text tower as a transformers CLIPTextModel (what `star download-weights` fetches).
OPENCLIP_H_TEXT = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    vocab_size=49408, max_position_embeddings=77, hidden_act="gelu", projection_dim=1024,
)
TINY_TEXT_CONFIG = dict(vocab_size=49408, max_position_embeddings=77, hidden_act="gelu", projection_dim=64, **TINY_TEXT)


@contextmanager
def building_on(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters on `device` in `dtype` (torch's default dtype is restored after)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype.is_floating_point else previous)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def unet(device: torch.device | str, dtype: torch.dtype, *, tiny: bool = False) -> STARUNet:
    """The UNet + ControlNet with no all-zero tensor: the released weights have none, and zero
    branches would make its output zero (no check possible) and its GEMMs run on zeros (faster)."""
    with building_on(device, dtype):
        model = STARUNet(**(TINY_UNET if tiny else {}))
        if device != "meta" and torch.device(device).type != "meta":
            randomise_zero_parameters(model)
    return model.to(device, dtype).eval().requires_grad_(False)


def vae(device: torch.device | str, dtype: torch.dtype, *, tiny: bool = False) -> AutoencoderKLTemporalDecoder:
    # `.to` after building: diffusers creates some parameters with torch.Tensor([...]), on the CPU.
    with building_on(device, dtype):
        model = AutoencoderKLTemporalDecoder(**(TINY_VAE if tiny else SVD_VAE))
    return model.to(device, dtype).eval().requires_grad_(False)


def text_tower(device: torch.device | str, dtype: torch.dtype, *, tiny: bool = False) -> CLIPTextModel:
    with building_on(device, dtype):
        model = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT_CONFIG if tiny else OPENCLIP_H_TEXT)))
    return model.to(device, dtype).eval().requires_grad_(False)

"""The reference's frame conversions around the CogVideoX model, in torch (no video I/O).

Bit-exactness depends on two details of the reference:
- LR frames are upscaled *as uint8*: torch's uint8 bicubic runs two separable
  passes in fixed point, rounding and saturating after each; float bicubic then
  rounding differs by up to 5 levels on a fifth of the values;
- model output goes back to uint8 by truncation (`(255 * x).astype(np.uint8)`), not rounding.

The colour fix between the two is `star_cli.pipeline.colorfix.adain_color_fix`
(per frame and channel, unbiased variance + 1e-5, against the LR frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upscale_uint8(frames: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 frames (T, C, H, W) -> uint8 (T, C, H*scale, W*scale), bicubic on the uint8 tensor."""
    if frames.dtype != torch.uint8:
        raise TypeError(f"upscale_uint8 needs uint8 frames, got {frames.dtype}")
    return F.interpolate(frames, scale_factor=scale, mode="bicubic", align_corners=False)


def to_model_range(frames: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-1, 1] as the reference maps it: (x / 255) * 2 - 1."""
    return (frames.float() / 255) * 2 - 1


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """Decoded frames in about [-1, 1] -> [0, 1]: clamp((x + 1) / 2, 0, 1)."""
    return ((frames + 1) / 2).clamp(0, 1)


def unit_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> uint8 by truncating 255 * x, as numpy's astype(uint8) does for values in [0, 255]."""
    return (255.0 * frames.float()).to(torch.uint8)

"""Colour correction of restored frames against the low-resolution input.

Diffusion restores detail but drifts colour. The reference (StableSR's colour fix,
as used by STAR's inference script) pulls the colours back to the input's:

- AdaIN (STAR's default): per frame and channel, normalise the output to the mean
  and standard deviation of the input frame. Statistics only, so the reference frame
  may have any size; the reference passes the LR frames as they are.
- wavelet: keep the output's high frequencies and take the low frequencies from the
  input (upsampled bilinearly to the output size), splitting with five levels of a
  dilated 3x3 blur.

Both take and return (F, 3, H, W) tensors in [-1, 1], the VAE's range. Arithmetic
runs in float32 on [0, 1] values as the reference's does (the output first clamped,
as it is when the reference turns it into video), and the result is clamped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from star_cli.errors import InputError

WAVELET_LEVELS = 5
_EPS = 1e-5


def _to_unit(frames: torch.Tensor) -> torch.Tensor:
    return (frames.float() + 1) / 2


def _from_unit(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (frames.clamp(0, 1) * 2 - 1).to(dtype)


def _check_frames(out: torch.Tensor, ref: torch.Tensor) -> None:
    if out.ndim != 4 or ref.ndim != 4 or out.shape[:2] != ref.shape[:2]:
        shapes = f"{tuple(out.shape)} and {tuple(ref.shape)}"
        raise ValueError(f"colour fix needs matching (F, C, H, W) frames, got {shapes}")


def _mean_std(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame and channel mean and (eps-regularised) standard deviation.

    The variance is the reference's unbiased one wherever that is defined (two or more
    pixels); a one-pixel frame has none, and its spread is 0 (the biased variance),
    not NaN: without the guard a 1x1 frame came out black.
    """
    flat = frames.flatten(2)
    correction = 1 if flat.shape[2] > 1 else 0
    return flat.mean(2)[..., None, None], (flat.var(2, correction=correction) + _EPS).sqrt()[..., None, None]


def adain_color_fix(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Match each output frame's channel statistics to its reference frame's."""
    _check_frames(out, ref)
    content = _to_unit(out).clamp(0, 1)
    content_mean, content_std = _mean_std(content)
    ref_mean, ref_std = _mean_std(_to_unit(ref).to(content.device))
    return _from_unit((content - content_mean) / content_std * ref_std + ref_mean, out.dtype)


def _wavelet_blur(frames: torch.Tensor, radius: int) -> torch.Tensor:
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=frames.device) / 16
    channels = frames.shape[1]
    kernel = kernel.expand(channels, 1, 3, 3)
    padded = F.pad(frames, (radius,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=radius)


def _wavelet_split(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) frequencies: the summed detail of each blur level, and what is left."""
    high = torch.zeros_like(frames)
    for level in range(WAVELET_LEVELS):
        low = _wavelet_blur(frames, 2**level)
        high += frames - low
        frames = low
    return high, frames


def wavelet_color_fix(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The output's high frequencies on top of the reference's low frequencies."""
    _check_frames(out, ref)
    content = _to_unit(out).clamp(0, 1)
    style = _to_unit(ref).to(content.device)
    if style.shape[-2:] != content.shape[-2:]:
        style = F.interpolate(style, size=content.shape[-2:], mode="bilinear", align_corners=False)
    content_high, _ = _wavelet_split(content)
    _, style_low = _wavelet_split(style)
    return _from_unit(content_high + style_low, out.dtype)


def _no_fix(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`--color-fix none`: the decoded frames as they are."""
    return out


_FIXES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "adain": adain_color_fix,
    "wavelet": wavelet_color_fix,
    "none": _no_fix,
}
COLOR_FIX_MODES = tuple(_FIXES)


def apply_color_fix(mode: str, out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Dispatch on the `--color-fix` value (one of COLOR_FIX_MODES)."""
    if mode not in _FIXES:
        raise InputError(f"unknown colour fix {mode!r}; choose one of {', '.join(COLOR_FIX_MODES)}")
    return _FIXES[mode](out, ref)

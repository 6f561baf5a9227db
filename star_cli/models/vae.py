"""STAR's VAE: Stable Video Diffusion's image encoder + temporal decoder (diffusers).

The reference encodes frame by frame (a sampled latent, times `scaling_factor`) and
decodes `latents / scaling_factor` with the temporal decoder over consecutive groups
of 3 frames, the last group holding what is left. The decoder mixes the frames of a
group (`time_conv_out`), so the group size is part of the result and stays an option.

diffusers has no tiling for this decoder, and a whole 4K frame group does not fit a
consumer GPU, so large frames are decoded here in overlapping spatial tiles whose
pixel outputs are cross-faded with linear ramps across each overlap (the spans and
weights of `star_cli.spans`, which also cut the UNet's chunks and tiles). The decoder
then only ever sees latents of at most (group, C, tile, tile): its memory is bounded
by the tile, not the frame. Tiling is used only when a frame is larger than one tile.

The encoder's full-resolution res-blocks make one whole 2192x3840 canvas frame need
about 10 GiB too, so encoding is tiled the same way (same spans, same linear ramps, on the
latent grid): the posterior's mean and std are cross-faded across tiles and ONE sample
is drawn over the whole frame from the caller's generator. A frame that fits one tile
draws exactly what an untiled encode draws. Tiling changes the result (GroupNorm
statistics are per tile: on the reference pipeline fixture, 64-latent decode tiles
move pixels by up to 0.22 of [-1, 1]), so the engine tiles only when a whole frame
does not fit (star_cli.pipeline.tiling).

Precision, as the reference: the weights stay float32 and encode in float32 (the
posterior and its sample feed every later step); `decode_dtype` float16/bfloat16 runs
the decoder under autocast in that dtype (the reference decodes under CUDA autocast),
which halves the decoder's activations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLTemporalDecoder
from diffusers.utils.torch_utils import randn_tensor

from star_cli.errors import InputError, StarError
from star_cli.spans import balanced_spans, span_weights

DEFAULT_GROUP = 3
DEFAULT_TILE_OVERLAP = 16

PosteriorNoise = Callable[[int, torch.Tensor], torch.Tensor]
"""noise(frame index, mean) -> unit normal noise shaped like mean: where a posterior sample's randomness comes from."""


def _tiles(
    height: int, width: int, tile: int | None, overlap: int, scale: int
) -> list[tuple[slice, slice, torch.Tensor]]:
    """Latent (rows, cols) boxes of a height x width latent grid, each with its 2-D blend weights.

    Weights are a partition of unity on a grid `scale` times finer: decoding blends
    pixels (scale 8, so a ramp spans every decoded pixel of an overlap rather than
    stepping once per latent); encoding blends latents (scale 1). A single box means
    the frame fits one tile.
    """
    axes = []
    for length in (height, width):
        spans = balanced_spans(length, tile, overlap)
        weights = span_weights([(start * scale, end * scale) for start, end in spans], "linear")
        axes.append([(slice(start, end), torch.from_numpy(w).float()) for (start, end), w in zip(spans, weights)])
    return [(rows, cols, row_w[:, None] * col_w[None, :]) for rows, row_w in axes[0] for cols, col_w in axes[1]]


class VideoVAE:
    """Encode frames to STAR latents and decode them back, group by group and tile by tile."""

    def __init__(self, model: AutoencoderKLTemporalDecoder, *, decode_dtype: torch.dtype | None = None) -> None:
        """`decode_dtype`: the decoder's compute dtype under autocast (None: the weights' dtype)."""
        self.model = model.eval().requires_grad_(False)
        self.decode_dtype = decode_dtype

    @classmethod
    def from_dir(
        cls,
        vae_dir: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        decode_dtype: torch.dtype | None = None,
    ) -> VideoVAE:
        """Load `<weights>/vae` (config.json + diffusion_pytorch_model.safetensors), weights in `dtype`."""
        try:
            model = AutoencoderKLTemporalDecoder.from_pretrained(str(vae_dir), torch_dtype=dtype)
        except (OSError, ValueError) as error:
            raise StarError(f"cannot load the VAE from {vae_dir}: {error}") from error
        return cls(model.to(device), decode_dtype=decode_dtype)

    @property
    def scaling_factor(self) -> float:
        return float(self.model.config.scaling_factor)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along each axis (8 for the SVD VAE)."""
        return 2 ** (len(self.model.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @torch.no_grad()
    def encode(
        self,
        frames: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        noise: PosteriorNoise | None = None,
        tile: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
    ) -> torch.Tensor:
        """Latents (F, C, H/8, W/8) * scaling_factor of frames (F, 3, H, W) in [-1, 1].

        One frame at a time, each drawing its posterior sample (`noise(k, mean)` for
        frame k, else from `generator`), as the reference does: the result does not
        depend on how frames are batched. `tile` and `tile_overlap` are in latent
        units; `tile=None` encodes whole frames. The noise is drawn at the full latent
        size, so tiling changes only the blended mean and std, never which random
        numbers a latent gets.
        """
        _check_tile_options(tile, tile_overlap)
        latents = []
        for index, frame in enumerate(frames.split(1)):
            mean, std = self.posterior(frame, tile=tile, tile_overlap=tile_overlap)
            if noise is None:
                eps = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            else:
                eps = noise(index, mean)
            latents.append(mean + std * eps)
        return torch.cat(latents) * self.scaling_factor

    @torch.no_grad()
    def posterior(
        self, frame: torch.Tensor, *, tile: int | None = None, tile_overlap: int = DEFAULT_TILE_OVERLAP
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (1, C, H/8, W/8) of the posterior of one frame (1, 3, H, W), unscaled."""
        _check_tile_options(tile, tile_overlap)
        # Contiguous NCHW: a channels-last canvas changed the fixture VAE's posterior mean by up to 5.8.
        frame = frame.to(device=self.device, dtype=self.dtype).contiguous()
        return self._encode_frame(frame, tile, tile_overlap)

    def _encode_frame(
        self, frame: torch.Tensor, tile: int | None, tile_overlap: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the posterior of one frame (1, 3, H, W), tile by tile when it exceeds `tile`.

        Pixel tiles are cut on the latent grid (x8); a tile at the bottom or right edge
        also takes the pixels past the last full latent, as a whole-frame encode does.
        """
        scale = self.spatial_factor
        height, width = frame.shape[-2] // scale, frame.shape[-1] // scale
        tiles = _tiles(height, width, tile, tile_overlap, 1)
        if len(tiles) == 1:
            posterior = self.model.encode(frame).latent_dist
            return posterior.mean, posterior.std
        channels = self.model.config.latent_channels
        mean = torch.zeros(1, channels, height, width, device=frame.device, dtype=torch.float32)
        std = torch.zeros_like(mean)
        for rows, cols, weights in tiles:
            pixels = frame[..., _pixel_slice(rows, height, scale), _pixel_slice(cols, width, scale)]
            posterior = self.model.encode(pixels).latent_dist
            weights = weights.to(frame.device)
            mean[..., rows, cols] += posterior.mean.float() * weights
            std[..., rows, cols] += posterior.std.float() * weights
        return mean.to(frame.dtype), std.to(frame.dtype)

    def encode_videos(self, videos: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> scaled latents (B, C, F, h, w), float32 (the UNet's layout)."""
        return torch.stack([self.encode(video.transpose(0, 1), generator).transpose(0, 1) for video in videos]).float()

    @torch.no_grad()
    def iter_decode(
        self,
        latents: torch.Tensor,
        *,
        group: int = DEFAULT_GROUP,
        tile: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
    ) -> Iterator[torch.Tensor]:
        """Decode latents (F, C, h, w) group by group, yielding float32 frames (g, 3, 8h, 8w) in about [-1, 1].

        `tile` and `tile_overlap` are in latent units; `tile=None` decodes whole frames.
        Yielding per group lets a caller move or write frames before the next group.
        """
        _check_decode_options(group, tile, tile_overlap)
        z = latents.to(device=self.device, dtype=self.dtype).contiguous() / self.scaling_factor
        for start in range(0, z.shape[0], group):
            with self._decode_precision():
                pixels = self._decode_group(z[start : start + group], tile, tile_overlap)
            yield pixels.float()

    def _decode_precision(self):
        """Autocast to `decode_dtype` when it differs from the weights' dtype (the reference's fp16 decode)."""
        if self.decode_dtype is None or self.decode_dtype == self.dtype:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.decode_dtype)

    def decode(
        self,
        latents: torch.Tensor,
        *,
        group: int = DEFAULT_GROUP,
        tile: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
    ) -> torch.Tensor:
        """All frames (F, 3, 8h, 8w) of `latents` (F, C, h, w); see `iter_decode`."""
        return torch.cat(list(self.iter_decode(latents, group=group, tile=tile, tile_overlap=tile_overlap)))

    def _decode_group(self, z: torch.Tensor, tile: int | None, tile_overlap: int) -> torch.Tensor:
        frames, _, height, width = z.shape
        scale = self.spatial_factor
        tiles = _tiles(height, width, tile, tile_overlap, scale)
        if len(tiles) == 1:
            return self.model.decode(z, num_frames=frames).sample
        joined = torch.zeros(frames, 3, height * scale, width * scale, device=z.device, dtype=torch.float32)
        for rows, cols, weights in tiles:
            pixels = self.model.decode(z[:, :, rows, cols], num_frames=frames).sample
            joined[..., _pixel_slice(rows, height, scale), _pixel_slice(cols, width, scale)] += (
                pixels.float() * weights.to(z.device)
            )
        return joined.to(z.dtype)


def _pixel_slice(latents: slice, length: int, scale: int) -> slice:
    """Pixels of a latent span of an axis `length` latents long; the last span runs to the edge."""
    return slice(latents.start * scale, None if latents.stop == length else latents.stop * scale)


def _check_decode_options(group: int, tile: int | None, tile_overlap: int) -> None:
    if group < 1:
        raise InputError(f"the VAE decode group must be at least 1 frame, got {group}")
    _check_tile_options(tile, tile_overlap)


def _check_tile_options(tile: int | None, tile_overlap: int) -> None:
    if tile is not None and not 0 <= tile_overlap < tile:
        raise InputError(f"the VAE tile overlap must be in [0, tile={tile}), got {tile_overlap}")


def to_vae_range(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 RGB (N, H, W, 3) -> float32 (N, 3, H, W) in the VAE's [-1, 1].

    In the reference's operation order (`to_tensor`'s x / 255, then (x - 0.5) / 0.5), so the
    values are bit-identical to its preprocessing.
    """
    unit = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).contiguous().float() / 255
    return (unit - 0.5) / 0.5


QUANTIZE_MODES = ("round", "truncate")


def to_uint8(frames: torch.Tensor, quantize: str = "round") -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> uint8 RGB (N, H, W, 3), clamped, then rounded or truncated.

    'round' is the nearest level (ours); 'truncate' is the reference's `astype('uint8')`
    of its [0, 255] floats, which darkens by half a level on average.
    """
    if quantize not in QUANTIZE_MODES:
        raise InputError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
    unit = (frames.float().clamp(-1, 1) * 0.5 + 0.5).clamp(0, 1) * 255
    unit = unit.round() if quantize == "round" else unit.floor()
    return unit.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


"""What a plan's options may be: the UNet size rule, each option's bounds, and the refusals.

`PlanOptions` (star_cli.pipeline.plan) checks itself with `check_options` when it is
made, so a bad --scale, --chunk-len, blend, canvas, --tile-size or overlap is one
InputError line before anything is read, and a refused --tile-size names the nearest
sizes that fit. The rules live here and the cutting in plan.py, so each reads alone.

UNet size rule (latent units; pixel = 8 x latent). The STAR UNet downsamples three times
with stride-2 3x3 convolutions padded by 2 rows and 1 column, and its upsamplers double
the size (nearest) and then drop the first and last row. A skip connection joins each
upsampled map with the map of the same level, so every level must come back to its size:
- height: down ``h' = floor((h + 2*2 - 3) / 2) + 1 = floor((h + 1) / 2) + 1``; up
  ``2h' - 2 = 2 * floor((h + 1) / 2)``, which equals h iff h is even. Levels 0, 1, 2 must
  be even: h even; ``h/2 + 1`` even <=> ``h = 2 (mod 4)``; then ``h1 = h/2 + 1`` and
  ``h1/2 + 1`` even <=> ``h1 = 2 (mod 4)`` <=> ``h = 2 (mod 8)``; level 2 is then even.
  So a latent height is valid iff ``h = 2 (mod 8)`` (pixels: 16 more than a multiple of 64).
- width: down ``w' = floor((w + 2*1 - 3) / 2) + 1 = ceil(w / 2)``; up ``2w'`` equals w iff
  w is even, at levels 0, 1, 2: valid iff ``w = 0 (mod 8)`` (pixels: a multiple of 64).
Examples: 90x160 (720x1280) and 122x216 (976x1728) are valid.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Literal

from star_cli.errors import InputError
from star_cli.pipeline.grid import UNET_GRID, ModelGrid
from star_cli.spans import BLEND_MODES, SOFT_BLEND_MODES

if TYPE_CHECKING:
    from star_cli.pipeline.plan import PlanOptions

VAE_FACTOR = 8
"""Output pixels per latent pixel, on each side (the VAE's downsampling)."""
VAE_TILE_OVERLAP = 16
"""Latent px shared by neighbouring VAE tiles (star_cli.models.vae's default overlap)."""
MAX_SCALE = 8.0
MIN_SCALE = 0.125
CanvasPolicy = Literal["minimal", "reference"]
CANVAS_POLICIES: tuple[str, ...] = ("minimal", "reference")
AUTO_TILES = "auto"
TileSize = tuple[int, int] | None | Literal["auto"]
"""UNet tile in output pixels (height, width); None: whole canvas; 'auto': decided from memory
(star_cli.pipeline.tiling; without a memory figure, the whole canvas)."""


def is_valid_latent_height(h: int) -> bool:
    """True iff the UNet returns a latent of height `h` unchanged (h = 2 mod 8, module doc)."""
    return UNET_GRID.height_ok(h)


def is_valid_latent_width(w: int) -> bool:
    """True iff the UNet returns a latent of width `w` unchanged (w = 0 mod 8, module doc)."""
    return UNET_GRID.width_ok(w)


def valid_latent_height(h: int) -> int:
    """The smallest valid latent height >= h."""
    return UNET_GRID.fit_height(h)


def valid_latent_width(w: int) -> int:
    """The smallest valid latent width >= w."""
    return UNET_GRID.fit_width(w)


def _nearest_on_grid(value: int, period: int, offset: int) -> int:
    """The value of ``offset + k * period`` (k >= 0) closest to `value`."""
    return offset + period * max(0, math.floor((value - offset) / period + 0.5))


def _check_tile_overlap(overlap: int, tile: tuple[int, int]) -> None:
    if overlap % VAE_FACTOR or not 0 <= 2 * overlap <= min(tile):
        raise InputError(
            f"tile overlap {overlap} must be a multiple of {VAE_FACTOR} px between 0 and half the tile size"
        )


def _check_exact_tile(tile: tuple[int, int], overlap: int, grid: ModelGrid) -> None:
    """An exact-tile grid's tile is the model's native frame: whole latent pixels of a valid size."""
    height, width = tile
    valid = grid.height_ok(height // VAE_FACTOR) and grid.width_ok(width // VAE_FACTOR)
    if height % VAE_FACTOR or width % VAE_FACTOR or not valid:
        raise InputError(f"tile size {height}x{width} does not fit {grid.name}")
    _check_tile_overlap(overlap, tile)


def _grid_at_least(value: int, period: int, offset: int) -> int:
    """The smallest ``offset + k * period`` (k >= 0) that is >= `value`."""
    return offset + period * max(0, -(-(value - offset) // period))


def smallest_tile(overlap: int) -> tuple[int, int]:
    """The smallest (height, width) tile the UNet takes that still holds two `overlap` px seams."""
    period = 8 * VAE_FACTOR
    return _grid_at_least(2 * overlap, period, 2 * VAE_FACTOR), _grid_at_least(max(2 * overlap, period), period, 0)


def _check_tile_size(tile: tuple[int, int], overlap: int) -> None:
    if overlap % VAE_FACTOR or overlap < 0:
        raise InputError(f"tile overlap {overlap} must be a multiple of {VAE_FACTOR} px, 0 or more")
    height, width = tile
    min_h, min_w = smallest_tile(overlap)
    fits_h = height >= min_h and height % VAE_FACTOR == 0 and is_valid_latent_height(height // VAE_FACTOR)
    fits_w = width >= min_w and width % VAE_FACTOR == 0 and is_valid_latent_width(width // VAE_FACTOR)
    if fits_h and fits_w:
        return
    near_h = max(min_h, _nearest_on_grid(height, 8 * VAE_FACTOR, 2 * VAE_FACTOR))
    near_w = max(min_w, _nearest_on_grid(width, 8 * VAE_FACTOR, 8 * VAE_FACTOR))
    raise InputError(
        f"--tile-size {height}x{width} (HxW) does not fit the STAR UNet: heights must be 16 more than a multiple "
        f"of 64, widths a multiple of 64, each at least twice the {overlap} px tile overlap; "
        f"nearest valid: {near_h}x{near_w} (smallest: {min_h}x{min_w})"
    )


def as_given(value: float) -> str:
    """A number the way a user types it: shortest round trip, no '.0', no exponent padding (8.0000001, 1e-9)."""
    text = repr(value).removesuffix(".0")
    return re.sub(r"e([+-])0*(\d)", lambda m: f"e{m.group(1).replace('+', '')}{m.group(2)}", text)


def check_options(o: PlanOptions) -> None:
    """Refuse the first option out of its bounds: one InputError line (a --tile-size one names sizes that fit)."""
    if not (math.isfinite(o.scale) and MIN_SCALE <= o.scale <= MAX_SCALE):
        raise InputError(f"--scale must be between {MIN_SCALE:g} and {MAX_SCALE:g}, got {as_given(o.scale)}")
    if o.chunk_len < 2:
        raise InputError(
            f"--chunk-len must be at least 2 frames (a video model needs temporal context), got {o.chunk_len}"
        )
    if not 0 <= 2 * o.chunk_overlap <= o.chunk_len:
        raise InputError(
            f"--chunk-overlap must be between 0 and half of --chunk-len ({o.chunk_len // 2}), got {o.chunk_overlap}"
        )
    if o.blend not in BLEND_MODES:
        raise InputError(f"blend must be one of {', '.join(BLEND_MODES)}, got {o.blend!r}")
    if o.tile_blend not in SOFT_BLEND_MODES:
        raise InputError(f"tile blend must be {' or '.join(map(repr, SOFT_BLEND_MODES))}, got {o.tile_blend!r}")
    if o.canvas not in CANVAS_POLICIES:
        raise InputError(f"canvas must be one of {', '.join(CANVAS_POLICIES)}, got {o.canvas!r}")
    if o.grid.exact_tiles and o.tile_size in (None, AUTO_TILES):
        raise InputError(f"{o.grid.name} needs its native frame size as the tile size")
    if o.tile_size not in (None, AUTO_TILES) and o.grid.exact_tiles:
        _check_exact_tile(o.tile_size, o.tile_overlap, o.grid)
    elif o.tile_size not in (None, AUTO_TILES):
        _check_tile_size(o.tile_size, o.tile_overlap)
    elif o.tile_overlap % VAE_FACTOR or o.tile_overlap < 0:
        raise InputError(f"tile overlap {o.tile_overlap} must be a non-negative multiple of {VAE_FACTOR} px")
    for name, tile in (("VAE decode", o.vae_tile), ("VAE encode", o.vae_encode_tile)):
        if tile is not None and tile <= 2 * VAE_TILE_OVERLAP:
            raise InputError(f"{name} tile must be more than {2 * VAE_TILE_OVERLAP} latent px, got {tile}")
    if o.window_chunks is not None and o.window_chunks < 1:
        raise InputError(f"--window-chunks must be at least 1, got {o.window_chunks}")
    if o.model_steps < 1 or o.guidance_branches not in (1, 2):
        raise InputError("model steps must be >= 1 and guidance branches 1 or 2")

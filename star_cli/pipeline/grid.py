"""Which latent sizes a denoiser accepts: the planner's only knowledge of the model family.

Plain numbers (no callables), so a plan stays printable, comparable and part of the
resume fingerprint. A latent length n is valid for an axis with (period, offset,
minimum) iff ``n >= minimum`` and ``n = offset (mod period)``.

- The STAR UNet (I2VGen-XL family) accepts heights 2 mod 8 and widths 0 mod 8 (the
  derivation is in `star_cli.pipeline.plan_rules`); tiles and chunks are at most the
  requested size, shrunk to the smallest valid size that still covers.
- The CogVideoX DiT (patch size 2) accepts even sizes, but was trained on one frame
  size and one clip length: its tiles are exactly the native frame (the canvas is
  padded up to it) and its chunks exactly the native clip (a shorter shot is padded
  in time by the engine), so every pass sees what the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelGrid:
    """Valid latent sizes of one denoiser; `name` appears in error messages."""

    name: str
    height_period: int
    height_offset: int
    height_min: int
    width_period: int
    width_offset: int
    width_min: int
    exact_tiles: bool = False
    exact_chunks: bool = False

    def height_ok(self, h: int) -> bool:
        return h >= self.height_min and h % self.height_period == self.height_offset

    def width_ok(self, w: int) -> bool:
        return w >= self.width_min and w % self.width_period == self.width_offset

    def fit_height(self, h: int) -> int:
        """The smallest valid latent height >= h."""
        return max(self.height_min, h + (self.height_offset - h) % self.height_period)

    def fit_width(self, w: int) -> int:
        """The smallest valid latent width >= w."""
        return max(self.width_min, w + (self.width_offset - w) % self.width_period)


UNET_GRID = ModelGrid("the STAR UNet", 8, 2, 2, 8, 0, 8)
DIT_GRID = ModelGrid("the CogVideoX DiT", 2, 0, 2, 2, 0, 2, exact_tiles=True, exact_chunks=True)

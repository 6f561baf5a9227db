"""The STAR UNet's shape, as a plain record that travels with saved weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Levels 0..2 (scales 1, 1/2, 1/4) carry spatial and temporal transformers; the
# reference's `attn_scales` leaves the deepest level (1/8) with ResBlocks only.
ATTENTION_LEVELS = 3


@dataclass(frozen=True)
class STARConfig:
    """Hyper-parameters of the denoiser; the defaults are the released full-size model.

    `head_dim` sets the width of every attention head except the first temporal
    transformer (right after the input conv), which uses `num_heads` heads of
    `head_dim` channels; that asymmetry is the reference's and the checkpoints'.
    """

    dim: int = 320
    head_dim: int = 64
    num_heads: int = 8
    dim_mult: tuple[int, ...] = field(default=(1, 2, 4, 4))
    num_res_blocks: int = 2
    context_dim: int = 1024
    in_dim: int = 4
    out_dim: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        if self.dim % 32 or any(self.dim * m % 32 for m in self.dim_mult):
            raise ValueError(f"every level width must be a multiple of 32 (GroupNorm groups): {self}")
        attended = [self.dim * m for m in (*self.dim_mult[:ATTENTION_LEVELS], self.dim_mult[-1])]
        if any(width % self.head_dim for width in attended):
            raise ValueError(f"widths with attention must be multiples of head_dim: {self}")

    @property
    def embed_dim(self) -> int:
        """Width of the timestep embedding fed to every ResBlock."""
        return 4 * self.dim

    @property
    def num_downsamples(self) -> int:
        return len(self.dim_mult) - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists, not tuples), the `star_config` metadata of saved weights."""
        data = asdict(self)
        data["dim_mult"] = list(self.dim_mult)
        return data

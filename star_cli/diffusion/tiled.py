"""Per-step joining of x0 estimates from temporal chunks and spatial tiles.

At every solver step each region (a frame range x a row range x a column range
of the window latent, in latent units) is denoised on its own, and the x0
estimates are joined as a weighted average normalised by the sum of weights.
Joining x0 at every step, rather than whole sampled chunks at the end, lets the
solver see one consistent video, so chunk and tile borders do not drift apart.

The join knows nothing about how regions are planned: any positive weights work.
A region weight is one tensor broadcastable to the region's (F, h, w).
`grid_regions` builds the regions of a grid of chunks x tile rows x tile columns
with separable weights from `star_cli.spans.span_weights` (the same weights the
plan carries): 'cut' is the reference's chunked mode, 'cosine'/'linear' feather.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product

import torch

from star_cli.diffusion.samplers import X0Fn
from star_cli.spans import BlendMode, Span, span_weights


@dataclass(frozen=True)
class Region:
    """A box of the window latent (B, C, F, H, W) and its join weight, broadcastable to (F, h, w)."""

    frames: slice
    rows: slice
    cols: slice
    weight: torch.Tensor

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The region of a (..., F, H, W) tensor (a view)."""
        return x[..., self.frames, self.rows, self.cols]

    @classmethod
    def separable(
        cls, frames: Span, rows: Span, cols: Span, weights: tuple[Sequence[float], Sequence[float], Sequence[float]]
    ) -> Region:
        """A box whose weight is the outer product of per-frame, per-row and per-column weights."""
        f, r, c = (torch.as_tensor(w, dtype=torch.float32) for w in weights)
        return cls(slice(*frames), slice(*rows), slice(*cols), f[:, None, None] * r[None, :, None] * c[None, None, :])


def _axis_weights(spans: Sequence[Span], length: int, weighting: BlendMode) -> list[torch.Tensor]:
    """float32 weights of spans that must cover 0..length (sorted and gap-free: `span_weights`)."""
    if not spans or spans[0][0] != 0 or spans[-1][1] != length:
        raise ValueError(f"spans {list(spans)} must cover 0..{length}")
    return [torch.from_numpy(w).float() for w in span_weights(spans, weighting)]


def grid_regions(
    frame_spans: Sequence[Span],
    row_spans: Sequence[Span],
    col_spans: Sequence[Span],
    size: tuple[int, int, int],
    weighting: BlendMode = "cosine",
) -> list[Region]:
    """Every chunk x tile-row x tile-column box of an (F, H, W) latent, with separable weights.

    The reference's chunked mode is `weighting='cut'` with a single full-frame tile.
    """
    axes = (frame_spans, row_spans, col_spans)
    per_axis = [list(zip(spans, _axis_weights(spans, n, weighting))) for spans, n in zip(axes, size)]
    return [
        Region.separable(f, r, c, (fw, rw, cw)) for (f, fw), (r, rw), (c, cw) in product(*per_axis)
    ]


def joined_x0_fn(
    regions: Sequence[Region],
    x0_fn_for: Callable[[Region], X0Fn],
    size: tuple[int, int, int],
    device: torch.device | str = "cpu",
) -> X0Fn:
    """An x0_fn for the whole (F, H, W) window that denoises region by region and joins the estimates.

    `x0_fn_for(region)` is called once per region up front (e.g. to crop the hint).
    The normaliser is computed once; a point no region covers with positive weight is an error.
    """
    total = torch.zeros(size, device=device)
    for region in regions:
        region.crop(total).add_(region.weight.to(device))
    if not (total > 0).all():
        raise ValueError("the regions do not cover the whole latent with positive weight")
    inverse_total = total.reciprocal()
    parts = [(region, region.weight.to(device), x0_fn_for(region)) for region in regions]

    def x0_fn(x: torch.Tensor, sigma: float) -> torch.Tensor:
        joined = torch.zeros_like(x)
        for region, weight, region_x0_fn in parts:
            region.crop(joined).add_(weight.to(x.dtype) * region_x0_fn(region.crop(x), sigma))
        return joined * inverse_total.to(x.dtype)

    return x0_fn

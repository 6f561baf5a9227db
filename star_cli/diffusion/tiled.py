"""Per-step joining of x0 estimates from temporal chunks and spatial tiles.

At every solver step each region (a frame range x a row range x a column range
of the window latent, in latent units) is denoised on its own, and the x0
estimates are joined as a weighted average normalised by the sum of weights.
Joining x0 at every step, rather than whole sampled chunks at the end, lets the
solver see one consistent video, so chunk and tile borders do not drift apart.

The join knows nothing about how regions are planned: any positive weights work.
Two weightings are provided for callers (the plan reuses them):
- `cut_weights`: 0/1 weights with a hard cut in the middle of each overlap, the
  reference's chunked mode;
- `ramp_weights`: weights rising and falling smoothly across overlaps (our
  default), which hide seams instead of moving them.
A region weight is one tensor broadcastable to the region's (F, h, w);
`grid_regions` builds separable weights for a grid of chunks x tile rows x tile columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Callable, Sequence

import torch

from star_cli.diffusion.samplers import X0Fn

Span = tuple[int, int]
WEIGHTINGS = ("cut", "cosine", "linear")


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


def _check_spans(spans: Sequence[Span], length: int) -> None:
    """Spans must be sorted by start, non-empty, and cover 0..length without gaps."""
    covered, previous_start = 0, -1
    for start, end in spans:
        if not (previous_start < start <= covered and start < end <= length):
            raise ValueError(f"spans {list(spans)} must be sorted, non-empty and cover 0..{length} without gaps")
        covered, previous_start = max(covered, end), start
    if covered != length:
        raise ValueError(f"spans {list(spans)} must cover 0..{length}")


def cut_weights(spans: Sequence[Span], length: int) -> list[torch.Tensor]:
    """0/1 weights (one 1-D tensor per span) cutting each overlap at its middle.

    Consecutive spans (a, b) and (c, d) hand over at c + (b - c) // 2. For equal
    overlaps this is exactly the reference's rule, which keeps
    [:len + cut - overlap] of the first chunk, [cut:len + cut - overlap] of the
    middle ones and [cut:] of the last, with cut = overlap // 2.
    """
    _check_spans(spans, length)
    handovers = [nxt[0] + max(cur[1] - nxt[0], 0) // 2 for cur, nxt in zip(spans, spans[1:])]
    bounds = [0, *handovers, length]
    weights = []
    for (start, end), keep_from, keep_to in zip(spans, bounds, bounds[1:]):
        position = torch.arange(start, end)
        weights.append(((position >= keep_from) & (position < keep_to)).float())
    return weights


def _ramp(n: int, kind: str) -> torch.Tensor:
    """n strictly positive weights rising towards 1; a rising and a falling ramp sum to 1."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    ramp = u if kind == "linear" else 0.5 - 0.5 * torch.cos(math.pi * u)
    return ramp.float()


def ramp_weights(spans: Sequence[Span], length: int, kind: str = "cosine") -> list[torch.Tensor]:
    """Smooth weights (one 1-D tensor per span): 1 inside, ramps over the overlaps with neighbours."""
    if kind not in ("cosine", "linear"):
        raise ValueError(f"unknown ramp {kind!r}: choose 'cosine' or 'linear'")
    _check_spans(spans, length)
    weights = []
    for k, (start, end) in enumerate(spans):
        size = end - start
        weight = torch.ones(size)
        if k > 0 and spans[k - 1][1] > start:
            n = min(spans[k - 1][1] - start, size)
            weight[:n] = torch.minimum(weight[:n], _ramp(n, kind))
        if k + 1 < len(spans) and spans[k + 1][0] < end:
            n = min(end - spans[k + 1][0], size)
            weight[size - n :] = torch.minimum(weight[size - n :], _ramp(n, kind).flip(0))
        weights.append(weight)
    return weights


def axis_weights(spans: Sequence[Span], length: int, weighting: str) -> list[torch.Tensor]:
    """`cut_weights` or `ramp_weights` by name (one of WEIGHTINGS)."""
    if weighting == "cut":
        return cut_weights(spans, length)
    return ramp_weights(spans, length, weighting)


def grid_regions(
    frame_spans: Sequence[Span],
    row_spans: Sequence[Span],
    col_spans: Sequence[Span],
    size: tuple[int, int, int],
    weighting: str = "cosine",
) -> list[Region]:
    """Every chunk x tile-row x tile-column box of an (F, H, W) latent, with separable weights.

    The reference's chunked mode is `weighting='cut'` with a single full-frame tile.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}: choose one of {', '.join(WEIGHTINGS)}")
    per_axis = [axis_weights(spans, n, weighting) for spans, n in zip((frame_spans, row_spans, col_spans), size)]
    regions = []
    for (fi, f), (ri, r), (ci, c) in product(*(enumerate(spans) for spans in (frame_spans, row_spans, col_spans))):
        weight = per_axis[0][fi][:, None, None] * per_axis[1][ri][None, :, None] * per_axis[2][ci][None, None, :]
        regions.append(Region(slice(*f), slice(*r), slice(*c), weight))
    return regions


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

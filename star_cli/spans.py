"""Overlapping spans along one axis, and the weights that join them.

Everything that is too long to process at once is cut the same way: frames into UNet
chunks and windows, latent rows and columns into UNet tiles and VAE decode tiles. Each
axis is split into spans ``[start, end)`` that overlap their neighbours, each span is
processed on its own, and the pieces are joined by a weighted average. This module
holds both halves, once for every caller: how to split a length (`balanced_spans`,
`reference_spans`) and how much each span counts at each position (`span_weights`).
It is plain arithmetic on integers and numpy arrays, so the planner (``--dry-run``)
can use it without importing torch; torch callers convert the weights.

The weights form a partition of unity along the axis: at every position the weights
of the spans that cover it add up to exactly 1, so a joiner may use them as they are
or normalise again, which changes nothing. Weights of a grid of tiles are outer
products of a row and a column profile, and stay a partition of unity over the grid.

Modes, for the overlap of two neighbouring spans:
- ``cosine``: a raised-cosine (Hann) cross-fade; its slope is zero at both ends, so the
  joined signal has no kink where a fade starts or stops.
- ``linear``: a straight ramp.
- ``cut``: the reference's join (STAR's chunked sampler): the earlier span keeps the first
  ``overlap // 2`` positions of the overlap, the later span everything from there on.
The soft ramps are sampled at position centres ((k + 0.5) / n), so no position of an
overlap gets weight exactly 0 or 1 from a soft fade and both spans always contribute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

Span = tuple[int, int]
BlendMode = Literal["cosine", "linear", "cut"]
BLEND_MODES: tuple[str, ...] = ("cosine", "linear", "cut")
SOFT_BLEND_MODES: tuple[str, ...] = ("cosine", "linear")
"""The modes that feather (every covering span contributes): what spatial tiles use."""


def reference_spans(length: int, window: int, overlap: int) -> list[Span]:
    """STAR's sliding_windows_1d: windows of `window`, the last one stretched up to 1.25x."""
    stride, start, spans = window - overlap, 0, []
    while start < length:
        if start + window * 1.25 >= length:
            spans.append((start, length))
            break
        spans.append((start, start + window))
        start += stride
    return spans


def balanced_spans(length: int, max_len: int | None, min_overlap: int, fit: Callable[[int], int] = int) -> list[Span]:
    """The fewest equal spans of at most `max_len` covering [0, length) with overlaps >= `min_overlap`.

    Spans are as short as possible (then rounded up by `fit` to a valid size, which must
    keep a valid `max_len` unchanged) and evenly spread, so no span is a wasteful
    leftover and memory is bounded by `max_len`. `max_len` None (no bound) or a length
    that fits gives the single span (0, length). Needs ``0 <= min_overlap < max_len``.
    """
    if max_len is None or length <= max_len:
        return [(0, length)]
    count = -(-(length - min_overlap) // (max_len - min_overlap))
    size = fit(-(-(length + (count - 1) * min_overlap) // count))
    room, gaps = length - size, count - 1
    starts = [(2 * i * room + gaps) // (2 * gaps) for i in range(count)]
    return [(s, s + size) for s in starts]


def rising_ramp(n: int, mode: BlendMode) -> np.ndarray:
    """Weights of the LATER span across an overlap of `n` positions (the earlier one gets 1 - ramp).

    The soft ramps are symmetric, ``ramp[k] + ramp[n - 1 - k] == 1``; 'cut' is the
    reference's step, which for odd `n` gives the middle frame to the later span.
    """
    if mode == "cut":
        return (np.arange(n) >= n // 2).astype(np.float64)
    centres = (np.arange(n, dtype=np.float64) + 0.5) / n
    if mode == "linear":
        return centres
    if mode == "cosine":
        return np.sin(centres * (math.pi / 2)) ** 2
    raise ValueError(f"unknown blend mode {mode!r}; expected one of {', '.join(BLEND_MODES)}")


def span_weights(spans: Sequence[Span], mode: BlendMode) -> list[np.ndarray]:
    """Per-span float64 weights (length ``end - start`` each) for sorted, gap-free, overlapping spans.

    Each span fades in over its overlap with the previous span and out over its overlap
    with the next one; the result is normalised so the weights covering any position sum
    to 1. Normalising matters only where three spans overlap (possible when spans were
    shrunk to equal sizes); elsewhere the symmetric ramps already sum to 1. Spans must
    start strictly after one another: a span starting with its predecessor adds nothing.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"unknown blend mode {mode!r}; expected one of {', '.join(BLEND_MODES)}")
    if not spans:
        return []
    origin, stop = spans[0][0], spans[-1][1]
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        if not (s0 < s1 <= e0 <= e1):
            raise ValueError(f"spans must be sorted and gap-free, got {(s0, e0)} then {(s1, e1)}")
    weights = []
    for i, (start, end) in enumerate(spans):
        w = np.ones(end - start, dtype=np.float64)
        if i > 0 and spans[i - 1][1] > start:
            head = spans[i - 1][1] - start
            w[:head] *= rising_ramp(head, mode)
        if i + 1 < len(spans) and end > spans[i + 1][0]:
            tail = end - spans[i + 1][0]
            w[end - start - tail :] *= 1.0 - rising_ramp(tail, mode)
        weights.append(w)
    total = np.zeros(stop - origin, dtype=np.float64)
    for (start, end), w in zip(spans, weights):
        total[start - origin : end - origin] += w
    if not np.all(total > 0):
        raise ValueError("spans leave positions with zero total weight")
    return [w / total[start - origin : end - origin] for (start, end), w in zip(spans, weights)]

"""Weights for joining overlapping spans: chunks in time, tiles in space, windows of output.

Every region the UNet sees (a chunk of frames, a tile of the latent grid) overlaps its
neighbours; the pieces are joined by a weighted average. The weights here form a
partition of unity along one axis: at every position the weights of the spans that
cover it add up to exactly 1, so a joiner (star_cli.diffusion.tiled for x0 estimates,
the window cross-fade of decoded frames) may use them as they are or normalise again,
which changes nothing. Two-dimensional tile weights are outer products of a row and a
column profile, and stay a partition of unity over a grid of tiles.

Modes, for the overlap of two neighbouring spans:
- ``cosine``: a raised-cosine (Hann) cross-fade; its slope is zero at both ends, so the
  joined signal has no kink where a fade starts or stops. Default.
- ``linear``: a straight ramp.
- ``cut``: the reference's join (STAR's chunked sampler): the earlier span keeps the first
  ``overlap // 2`` frames of the overlap, the later span everything from there on.
The ramps are sampled at pixel centres ((k + 0.5) / n), so no position of an overlap gets
weight exactly 0 or 1 from a soft fade and both spans always contribute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

BlendMode = Literal["cosine", "linear", "cut"]
BLEND_MODES: tuple[str, ...] = ("cosine", "linear", "cut")


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


def span_weights(spans: Sequence[tuple[int, int]], mode: BlendMode) -> list[np.ndarray]:
    """Per-span weights (length ``end - start`` each) for sorted, gap-free, overlapping spans.

    Each span fades in over its overlap with the previous span and out over its overlap
    with the next one; the result is normalised so the weights covering any position sum
    to 1. Normalising matters only where three spans overlap (possible when spans were
    shrunk to equal sizes); elsewhere the symmetric ramps already sum to 1.
    """
    if not spans:
        return []
    origin, stop = spans[0][0], spans[-1][1]
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        if not (s0 <= s1 <= e0 <= e1):
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


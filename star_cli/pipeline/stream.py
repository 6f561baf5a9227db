"""Streaming glue between the reader, a windowed engine and the writer.

A window is a contiguous frame range the engine restores in one go. Windows of
one shot overlap so their outputs can be cross-faded; the two helpers here keep
only what the current window needs, so memory follows the window size and never
the video length (the Real-ESRGAN video script's reader/writer queue, for windows).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from star_cli.video.reader import FrameBatch


@dataclass(frozen=True)
class WindowFrames:
    """The input frames of one window with their timestamps."""

    index: int
    start: int
    frames: np.ndarray
    pts: list[int]


def gather_windows(batches: Iterable[FrameBatch], spans: Sequence[tuple[int, int]]) -> Iterator[WindowFrames]:
    """Regroup reader batches into the frame ranges `spans` (sorted, possibly overlapping).

    Frames before the next span's start are dropped as soon as the current span
    is yielded, so at most one span (plus one reader batch) is held.
    """
    held: list[np.ndarray] = []
    held_pts: list[int] = []
    held_start = 0
    batches = iter(batches)
    for index, (start, end) in enumerate(spans):
        while held_start + len(held) < end:
            batch = next(batches, None)
            if batch is None:
                break
            held.extend(batch.frames)
            held_pts.extend(batch.pts)
        if held_start + len(held) < end:
            raise ValueError(f"window {index} needs frames up to {end}, the video ended at {held_start + len(held)}")
        lo, hi = start - held_start, end - held_start
        yield WindowFrames(index, start, np.stack(held[lo:hi]), held_pts[lo:hi])
        next_start = spans[index + 1][0] if index + 1 < len(spans) else end
        drop = max(0, next_start - held_start)
        del held[:drop], held_pts[:drop]
        held_start += drop


class WindowJoiner:
    """Cross-fade overlapping window outputs and release frames once they are final.

    Overlapping frames accumulate `weight[i] * frame[i]` in float32 and are divided by
    their summed weight once no later window covers them; every other frame passes
    through untouched, so only the overlaps ever cost a float copy.
    """

    def __init__(self, spans: Sequence[tuple[int, int]]) -> None:
        self._spans = list(spans)
        self._sums: dict[int, np.ndarray] = {}
        self._weights: dict[int, float] = {}
        self._pts: dict[int, int] = {}

    def set_span(self, index: int, span: tuple[int, int], next_start: int | None) -> None:
        """For windows that become known one by one (a stream): window `index` covers `span`,
        and the next one starts at `next_start` (None: `index` is the last)."""
        del self._spans[index:]
        self._spans.append(span)
        if next_start is not None:
            self._spans.append((next_start, next_start + 1))  # only its start matters until it is set

    def add(self, index: int, frames: np.ndarray, pts: Sequence[int], weights: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Add window `index`'s uint8 output; return the frames that became final (maybe none)."""
        start, end = self._spans[index]
        if len(frames) != end - start or len(weights) != end - start:
            raise ValueError(f"window {index} returned {len(frames)} frames for span {start}..{end}")
        ready_until = self._spans[index + 1][0] if index + 1 < len(self._spans) else end
        released, stamps = [], []
        for offset, (frame, weight, stamp) in enumerate(zip(frames, weights, pts)):
            position = start + offset
            if position < ready_until and position not in self._sums and weight == 1:
                released.append(frame)  # covered by this window alone
                stamps.append(stamp)
                continue
            contribution = frame.astype(np.float32) * np.float32(weight)
            if position in self._sums:
                self._sums[position] += contribution
                self._weights[position] += float(weight)
            else:
                self._sums[position], self._weights[position], self._pts[position] = contribution, float(weight), stamp
            if position < ready_until:
                released.append(self._finish(position))
                stamps.append(self._pts.pop(position))
        if not released:
            return np.empty((0, 0, 0, 3), dtype=np.uint8), []
        return np.stack(released), stamps

    def _finish(self, position: int) -> np.ndarray:
        total = self._weights.pop(position)
        if total <= 0:
            raise ValueError(f"frame {position} has no weight in any window")
        return np.clip(np.rint(self._sums.pop(position) / np.float32(total)), 0, 255).astype(np.uint8)

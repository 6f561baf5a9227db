"""Windows in, cross-faded frames out: memory follows the window, frames stay in order."""

from __future__ import annotations

import numpy as np
import pytest

from star_cli.pipeline.stream import WindowJoiner, gather_windows
from star_cli.video.reader import FrameBatch

SPANS = [(0, 6), (4, 10), (10, 13)]  # an overlap of 2, then a hard cut at 10


def batches(count: int, size: int):
    for start in range(0, count, size):
        stop = min(count, start + size)
        frames = np.stack([np.full((2, 3, 3), i, dtype=np.uint8) for i in range(start, stop)])
        yield FrameBatch(frames, [100 + i for i in range(start, stop)], start)


def test_gather_windows_regroups_batches_into_spans():
    windows = list(gather_windows(batches(13, 4), SPANS))
    assert [(w.index, w.start, len(w.frames)) for w in windows] == [(0, 0, 6), (1, 4, 6), (2, 10, 3)]
    assert windows[1].frames[:, 0, 0, 0].tolist() == [4, 5, 6, 7, 8, 9]
    assert windows[1].pts == [104, 105, 106, 107, 108, 109]


def test_gather_windows_reports_a_video_shorter_than_the_plan():
    with pytest.raises(ValueError, match="ended at 12"):
        list(gather_windows(batches(12, 5), SPANS))


def test_joiner_cross_fades_overlaps_and_passes_the_rest_through():
    joiner = WindowJoiner(SPANS)
    ramp = np.array([1, 1, 1, 1, 0.75, 0.25])
    first = np.full((6, 2, 3, 3), 200, dtype=np.uint8)
    second = np.full((6, 2, 3, 3), 100, dtype=np.uint8)
    frames, pts = joiner.add(0, first, list(range(6)), ramp)
    assert pts == [0, 1, 2, 3] and (frames == 200).all()
    frames, pts = joiner.add(1, second, list(range(4, 10)), ramp[::-1].copy())
    assert pts == [4, 5, 6, 7, 8, 9]
    assert frames[:, 0, 0, 0].tolist() == [175, 125, 100, 100, 100, 100]
    frames, pts = joiner.add(2, np.zeros((3, 2, 3, 3), dtype=np.uint8), [10, 11, 12], np.ones(3))
    assert pts == [10, 11, 12] and (frames == 0).all()


def test_joiner_refuses_a_frame_no_window_weights():
    joiner = WindowJoiner([(0, 3)])
    with pytest.raises(ValueError, match="no weight"):
        joiner.add(0, np.zeros((3, 1, 1, 3), dtype=np.uint8), [0, 1, 2], np.array([1.0, 0.0, 1.0]))

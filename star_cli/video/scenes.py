"""Hard-cut detection: a cheap streaming pass so chunks never straddle two shots.

Each frame is shrunk to a thumbnail by swscale (area averaging, so noise and
motion blur out) and summarised by per-channel colour histograms. A hard cut
swaps most of the colour distribution between two consecutive frames; motion
within a shot moves only a small share of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from star_cli.video.probe import open_input, video_stream
from star_cli.video.reader import decoded_frames
from star_cli.video.segment import Segment

THUMBNAIL = (64, 36)  # width, height: enough pixels for stable histograms, cheap to make
BINS = 16


def colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """(3, BINS) per-channel histograms of an RGB uint8 image, each summing to 1."""
    pixels = rgb.reshape(-1, 3).astype(np.intp) // (256 // BINS)
    offsets = pixels + np.arange(3) * BINS
    counts = np.bincount(offsets.ravel(), minlength=3 * BINS).reshape(3, BINS)
    return counts / len(pixels)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the colour distribution that moved, in [0, 1] (half the L1 distance, channel mean)."""
    return float(np.abs(a - b).sum(axis=1).mean() / 2)


def detect_scene_cuts(
    path: str | os.PathLike, threshold: float = 0.35, *, ignore_errors: bool = False, segment: Segment | None = None
) -> list[int]:
    """Indices of frames that start a new shot (never 0), in display order (counted from `segment`'s first).

    `threshold` is the share of the colour histogram that must change between
    two consecutive frames; 0.35 catches cuts between different shots while
    ignoring fast motion, flicker and noise within one.
    """
    path = Path(path)
    cuts: list[int] = []
    with open_input(path) as container:
        stream = video_stream(container, path)
        stream.codec_context.options = {"skip_loop_filter": "all"}  # deblocking is invisible at 64x36
        shrink = VideoReformatter()
        previous: np.ndarray | None = None
        for index, frame in enumerate(decoded_frames(container, stream, path, ignore_errors=ignore_errors, segment=segment)):
            thumbnail = shrink.reformat(
                frame, width=THUMBNAIL[0], height=THUMBNAIL[1], format="rgb24", interpolation=Interpolation.AREA
            ).to_ndarray()
            current = colour_histogram(thumbnail)
            if previous is not None and histogram_distance(previous, current) > threshold:
                cuts.append(index)
            previous = current
    return cuts

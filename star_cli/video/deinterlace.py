"""Deinterlacing before upscaling: ffmpeg's bwdif makes whole frames of interlaced fields.

An interlaced source (DV, broadcast SD, many tape transfers in archives) holds two fields
per frame, taken half a frame apart. Upscaled as they are, moving edges keep the comb of
alternate lines, and a restoration model takes the comb for texture and sharpens it.
bwdif rebuilds each frame from its own fields and its neighbours' in `send_frame` mode:
one frame out per frame in, timestamps unchanged (bwdif stamps in half ticks, for field
rate; they are stamped back), so plans, audio and resume are untouched. It runs on the
decoded frames in their own pixel format where bwdif takes it (ffmpeg converts packed RGB
to planar), before any RGB conversion, and keeps their colour tags and rotation.

`--deinterlace auto` (default) deinterlaces a video whose first frame is coded as
interlaced, and then only its frames flagged interlaced; `on` deinterlaces every frame
(for transfers that lost their flags); `off` keeps the fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction

import av


def bwdif_frames(mode: str, interlaced: bool) -> str | None:
    """Which frames bwdif rebuilds for `--deinterlace mode` and a probe's `interlaced`: 'interlaced'
    (the flagged ones), 'all', or None (no deinterlacing)."""
    if mode == "on":
        return "all"
    return "interlaced" if mode == "auto" and interlaced else None


class _Bwdif:
    """One bwdif filter graph for frames of one size and pixel format."""

    def __init__(self, first: av.VideoFrame, time_base: Fraction, frames: str) -> None:
        self.key = (first.width, first.height, first.format.name)
        self.time_base = time_base
        self.graph = graph = av.filter.Graph()  # held: its filters do not keep it alive
        self.source = graph.add_buffer(width=first.width, height=first.height, format=first.format.name, time_base=time_base)
        deinterlace = graph.add("bwdif", f"mode=send_frame:parity=auto:deint={frames}")
        self.sink = graph.add("buffersink")
        self.source.link_to(deinterlace)
        deinterlace.link_to(self.sink)
        graph.configure()

    def push(self, frame: av.VideoFrame | None) -> Iterator[av.VideoFrame]:
        """Send `frame` (None: the end) and yield what the filter has ready (it looks one frame ahead)."""
        self.source.push(frame)
        while True:
            try:
                out = self.sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            if out.pts is not None and out.time_base != self.time_base:  # bwdif counts in half ticks (field rate)
                out.pts = int(out.pts * out.time_base / self.time_base)
                out.time_base = self.time_base
            yield out


def deinterlaced(frames: Iterable[av.VideoFrame], time_base: Fraction, which: str) -> Iterator[av.VideoFrame]:
    """`frames` with the `which` ('interlaced' or 'all', see `bwdif_frames`) rebuilt by bwdif, one for one.

    A stream that changes size or pixel format midway gets a new filter for the new frames
    (the old one is drained first, so no frame is lost or reordered).
    """
    bwdif: _Bwdif | None = None
    for frame in frames:
        if bwdif is not None and bwdif.key != (frame.width, frame.height, frame.format.name):
            yield from bwdif.push(None)
            bwdif = None
        if bwdif is None:
            bwdif = _Bwdif(frame, time_base, which)
        yield from bwdif.push(frame)
    if bwdif is not None:
        yield from bwdif.push(None)

"""Deinterlacing before upscaling: ffmpeg's bwdif makes whole frames of interlaced fields.

An interlaced source (DV, broadcast SD, many tape transfers in archives) holds two fields
per frame, taken half a frame apart. Upscaled as they are, moving edges keep the comb of
alternate lines, and a restoration model takes the comb for texture and sharpens it.
bwdif rebuilds each frame from its own fields and its neighbours' in `send_frame` mode:
one frame out per frame in, timestamps unchanged (bwdif stamps in half ticks, for field
rate; they are stamped back), so plans, audio and resume are untouched. It runs on the
decoded frames in their own pixel format where bwdif takes it (ffmpeg repacks packed and
semi-planar formats, e.g. UYVY tape captures, to planar ones), before any RGB conversion,
and keeps their colour tags (stamped back too: the repacking loses them) and rotation.
bwdif needs every plane at least 3 pixels wide and 4 high: `bwdif_refusal` says so before a
run starts.

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


_TAGS = ("color_primaries", "color_trc", "colorspace", "color_range")


class _Bwdif:
    """One bwdif filter graph for frames of one size and pixel format."""

    def __init__(self, first: av.VideoFrame, time_base: Fraction, frames: str) -> None:
        self.key = (first.width, first.height, first.format.name)
        self.time_base = time_base
        self.tags = {tag: getattr(first, tag) for tag in _TAGS}  # the same samples after any repacking
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
            for tag, value in self.tags.items():
                setattr(out, tag, value)
            yield out


def bwdif_refusal(width: int, height: int, pix_fmt: str) -> str | None:
    """Why bwdif cannot take frames of this size and pixel format (None: it can): tried on one blank frame."""
    frame = av.VideoFrame(width, height, pix_fmt)
    frame.pts = 0
    try:
        bwdif = _Bwdif(frame, Fraction(1, 25), "all")
        for _ in (*bwdif.push(frame), *bwdif.push(None)):
            pass
    except av.FFmpegError as error:
        return f"bwdif refuses {width}x{height} {pix_fmt} ({error.strerror or error}): every plane needs 3x4 pixels or more"
    return None


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

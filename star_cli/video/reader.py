"""Decoded frames, in display order, a batch at a time, as displayed uint8 RGB.

Memory stays at one batch whatever the length of the video: each batch is a
fresh array (the consumer may keep it), and nothing else is buffered beyond
the decoder's own few frames of lookahead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, VideoReformatter

from star_cli.errors import InputError
from star_cli.video.colour import decode_matrix, decode_range, tags_of
from star_cli.video.deinterlace import deinterlaced
from star_cli.video.probe import Declared, open_input, truncated_message, video_stream
from star_cli.video.segment import Segment

READ_BATCH = 16
"""Frames per reader batch the pipeline asks for: large enough to amortise Python overhead, small enough to stream."""


@dataclass(frozen=True)
class FrameBatch:
    """`frames` (N, H, W, 3) uint8 RGB; `pts` in the video stream's time base; `start` = index of frames[0]."""

    frames: np.ndarray
    pts: list[int]
    start: int


class RgbConverter:
    """Turns decoded frames of one stream into displayed RGB arrays.

    The matrix, range, rotation and size are fixed from the first frame (they
    are stream properties; a stream that changes size midway is scaled back to
    its first size, so every batch has one shape). One swscale context is
    reused for every frame, since building it is the expensive part.
    """

    def __init__(self, first: av.VideoFrame) -> None:
        tags = tags_of(first)
        self.matrix = decode_matrix(tags, first.height, first.width)
        self.range = decode_range(tags, first.format.name)
        self.turns = (int(first.rotation) % 360) // 90
        self.coded = (first.width, first.height)
        self.reformatter = VideoReformatter()

    @property
    def shape(self) -> tuple[int, int]:
        """Displayed (height, width)."""
        width, height = self.coded
        return (width, height) if self.turns % 2 else (height, width)

    def __call__(self, frame: av.VideoFrame, out: np.ndarray) -> None:
        """Convert `frame` into `out` (H, W, 3) uint8, rotated for display."""
        rgb = self.reformatter.reformat(
            frame,
            width=self.coded[0],
            height=self.coded[1],
            format="rgb24",
            src_colorspace=self.matrix,
            src_color_range=self.range,
            dst_color_range=ColorRange.JPEG,
            threads=0,
        )
        array = rgb.to_ndarray()
        out[...] = np.rot90(array, self.turns) if self.turns else array


def decoded_frames(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    path: Path,
    *,
    ignore_errors: bool,
    segment: Segment | None = None,
    check_complete: bool = True,
) -> Iterator[av.VideoFrame]:
    """Every decodable frame of `stream` (or of its `segment`), in display order.

    A demux or decode failure, or a stream that ends before what its header
    declares (see `Declared`), is an InputError naming the first lost frame;
    with `ignore_errors` bad packets are skipped and the frames that decode
    are kept. A segment is reached by seeking to the keyframe before it; frames
    before its start are decoded (they are what later frames refer to) and dropped.
    """
    stream.thread_type = "AUTO"
    if segment is not None:
        frames = _segment_frames(container, stream, path, ignore_errors=ignore_errors, segment=segment)
        yield from frames
        return
    index = 0
    end_pts = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
            frames = stream.decode(packet)
        except StopIteration:
            break
        except av.FFmpegError:
            if ignore_errors:
                continue
            raise InputError(truncated_message(path, index)) from None
        for frame in frames:
            yield frame
            index += 1
            if frame.pts is not None:
                end_pts = frame.pts + (frame.duration or 0)
    if not check_complete:
        return
    rate = stream.guessed_rate or stream.average_rate
    end = float(end_pts * stream.time_base)
    missing = Declared.of(stream).first_missing(index, end, 1 / float(rate) if rate else 0.0)
    if missing is not None and not ignore_errors:
        raise InputError(truncated_message(path, missing))


def _segment_frames(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path, *, ignore_errors: bool, segment: Segment
) -> Iterator[av.VideoFrame]:
    if segment.first:
        container.seek(segment.start_pts, stream=stream, backward=True)
    # After a seek the frames are not counted from the first: only the segment's own frames are checked.
    whole = decoded_frames(container, stream, path, ignore_errors=ignore_errors, check_complete=not segment.first)
    for frame in whole:
        if frame.pts is not None and frame.pts < segment.start_pts:
            continue
        if segment.end_pts is not None and frame.pts is not None and frame.pts >= segment.end_pts:
            return
        yield frame


def _source_frames(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path, *,
    ignore_errors: bool, segment: Segment | None, deinterlace: str | None,
) -> Iterator[av.VideoFrame]:
    """`decoded_frames`, deinterlaced where asked (`deinterlace`: which frames, see `bwdif_frames`)."""
    frames = decoded_frames(container, stream, path, ignore_errors=ignore_errors, segment=segment)
    return frames if deinterlace is None else deinterlaced(frames, stream.time_base, deinterlace)


def count_decodable_frames(path: str | os.PathLike) -> int:
    """How many frames `read_batches(path, ..., ignore_errors=True)` will yield.

    `probe` counts packets; in a damaged file some packets hold data no decoder
    can use, so planning around the frames of such a file needs this decode pass.
    """
    path = Path(path)
    with open_input(path) as container:
        stream = video_stream(container, path)
        return sum(1 for _ in decoded_frames(container, stream, path, ignore_errors=True))


def read_batches(
    path: str | os.PathLike, batch_size: int, *, ignore_errors: bool = False, segment: Segment | None = None,
    deinterlace: str | None = None,
) -> Iterator[FrameBatch]:
    """Yield the video at `path` as FrameBatch-es of up to `batch_size` frames.

    Frames are converted with the source's own YUV matrix and range (guessed
    like players do when untagged), high bit depths are scaled to 8 bits, and
    the display rotation is applied. `pts` are the source's timestamps, so a
    writer that keeps them reproduces the source timing (VFR included); they
    strictly increase (a damaged file's repeated stamp is nudged one tick on, and
    a timeline that starts over, as in concatenated files, is continued).
    With a `segment`, only its frames are read (`start` counts from its first). `deinterlace`
    names the frames bwdif rebuilds ('interlaced' or 'all'; None: none), one for one.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    path = Path(path)
    with open_input(path) as container:
        stream = video_stream(container, path)
        step = _nominal_step(stream)
        convert: RgbConverter | None = None
        batch: np.ndarray | None = None
        pts: list[int] = []
        start, last, offset = 0, None, 0
        frames = _source_frames(container, stream, path, ignore_errors=ignore_errors, segment=segment, deinterlace=deinterlace)
        for frame in frames:
            if convert is None:
                convert = RgbConverter(frame)
            if batch is None:
                batch = np.empty((batch_size, *convert.shape, 3), dtype=np.uint8)
            convert(frame, batch[len(pts)])
            last, offset = _next_pts(frame.pts, last, step, offset)
            pts.append(last)
            if len(pts) == batch_size:
                yield FrameBatch(batch, pts, start)
                start += len(pts)
                batch, pts = None, []
        if batch is not None and pts:
            yield FrameBatch(batch[: len(pts)], pts, start)


def _next_pts(pts: int | None, last: int | None, step: int, offset: int) -> tuple[int, int]:
    """(timestamp, offset): a frame's stamp kept strictly after `last`; frames without one get `last` + one step.

    `offset` shifts a timeline that jumped back by more than a frame (a second file
    concatenated onto the first) to continue one nominal frame after `last`;
    `video.remux` shifts the other streams the same way.
    """
    if pts is None:
        return (0 if last is None else last + step), offset
    stamp = int(pts) + offset
    if last is None:
        return stamp, offset
    if stamp < last - step:
        offset += last + step - stamp
        stamp = last + step
    return max(stamp, last + 1), offset


def _nominal_step(stream: av.VideoStream) -> int:
    """One nominal frame in time-base ticks: the timestamp step for frames that carry none (raw streams)."""
    rate = stream.guessed_rate or stream.average_rate
    return max(1, round(1 / (rate * stream.time_base))) if rate and stream.time_base else 1


def read_frames(
    path: str | os.PathLike, *, ignore_errors: bool = False, segment: Segment | None = None,
    deinterlace: str | None = None,
) -> Iterator[tuple[av.VideoFrame, int]]:
    """The decoded frames as they are (source pixel format, coded size; deinterlaced where asked,
    see `read_batches`) with `read_batches`' timestamps.

    For work that stays in the source's YUV planes (the Lanczos preview): no RGB
    conversion happens here, and the caller applies any rotation itself.
    """
    path = Path(path)
    with open_input(path) as container:
        stream = video_stream(container, path)
        step = _nominal_step(stream)
        last, offset = None, 0
        frames = _source_frames(container, stream, path, ignore_errors=ignore_errors, segment=segment, deinterlace=deinterlace)
        for frame in frames:
            last, offset = _next_pts(frame.pts, last, step, offset)
            yield frame, last

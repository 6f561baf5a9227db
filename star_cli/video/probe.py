"""What is in a video file, exactly, before any frame is processed.

`probe` opens the file, decodes one frame (the only reliable source of the
display rotation and of the colour tags some codecs carry only in-band) and
demuxes the video packets once without decoding them: counting packets gives
the exact frame count and the exact video duration even when the container
header is missing them (Matroska, WebM) or wrong (a truncated MP4 still
declares all its frames).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.stream import Discard, Disposition

from star_cli.errors import InputError
from star_cli.video.colour import ColourTags, tags_of

# A file whose demuxer reads single pictures is a still image, whatever its name.
_IMAGE_DEMUXERS = ("image2",)


@dataclass(frozen=True)
class StreamInfo:
    """A non-video stream the writer must carry over."""

    index: int
    kind: str  # "audio" | "subtitle" | "data" | "attachment"
    codec: str
    language: str | None
    title: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    """The video stream of a file, plus the other streams that travel with it.

    `width`/`height` are as displayed (rotation applied); `coded_width`/
    `coded_height` as stored. `rotation` is the display-matrix angle in
    counter-clockwise degrees (0, 90, 180 or 270), PyAV's convention.
    `sample_aspect_ratio` is the shape of a pixel as displayed, width over height
    (32/27 for anamorphic widescreen NTSC DV, 1 for square pixels), so the picture is
    shown `width * sample_aspect_ratio` wide. `num_frames` counts the frames actually present; `declared_frames` is what
    the container header claims (0 when it claims nothing); `is_truncated`
    says the header promised more frames or more time than the file holds.
    """

    path: Path
    container: str
    stream_index: int
    codec: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    fps: Fraction
    nominal_fps: Fraction
    time_base: Fraction
    start_pts: int
    num_frames: int
    declared_frames: int
    is_truncated: bool
    duration: float
    pix_fmt: str
    bit_depth: int
    color_primaries: str
    color_trc: str
    colorspace: str
    color_range: str
    is_vfr: bool
    streams: tuple[StreamInfo, ...]
    interlaced: bool = False  # the first frame is coded as interlaced fields
    sample_aspect_ratio: Fraction = Fraction(1)

    @property
    def colour(self) -> ColourTags:
        return ColourTags(self.color_primaries, self.color_trc, self.colorspace, self.color_range)


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open `path` for reading, turning every way it can be unreadable into one InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a video file")
    if not path.is_file():  # a pipe or a device: it can be read once, and a run reads its input several times
        raise InputError(f"{path}: is not a regular file (a pipe or device); save the video to a file first")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as error:
        raise InputError(
            f"{path}: cannot be read as a video (not a video file, or damaged/truncated): {error.strerror}"
        ) from None


def codec_name(stream: av.stream.Stream) -> str:
    """The codec's canonical name (`av1`, `subrip`), not the decoder's (`libdav1d`, `srt`).

    Attachments have no codec: their MIME type says what they are.
    """
    if stream.type == "attachment":
        return stream.mimetype or "unknown"
    # A stream whose codec is unknown (damaged header) has no context; some stream types have no name either.
    return stream.codec.canonical_name if stream.codec_context else (getattr(stream, "name", None) or "unknown")


def video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The main video stream; cover art (attached pictures) does not count."""
    if container.format.name in _IMAGE_DEMUXERS or container.format.name.endswith("_pipe"):
        raise InputError(f"{path}: is a still image, not a video")
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams})
    if "audio" in kinds:
        raise InputError(f"{path}: has no video stream (audio only)")
    raise InputError(f"{path}: has no video stream (found: {', '.join(kinds) or 'nothing'})")


@dataclass(frozen=True)
class Declared:
    """What a header promises about its video, to tell a damaged file from a short one.

    MP4/MOV sample tables count the frames; Matroska/WebM muxers tag each
    track with its DURATION (lost, like everything, when the tail is cut off).
    Other headers' counts are not frames: an AVI index also lists the empty
    chunks that stand for dropped or repeated frames.
    """

    frames: int = 0
    seconds: float | None = None

    @classmethod
    def of(cls, stream: av.VideoStream) -> Declared:
        sample_table = "mp4" in stream.container.format.name.split(",")
        frames = max(int(stream.frames or 0), 0) if sample_table else 0
        return cls(frames, _clock_seconds(stream.metadata.get("DURATION", "")))

    def first_missing(self, frames: int, end: float, interval: float) -> int | None:
        """Index of the first promised frame missing from `frames` frames ending at `end` s, or None."""
        short_of_time = self.seconds is not None and end < self.seconds - 1.5 * interval
        return frames if frames < self.frames or short_of_time else None


def _clock_seconds(clock: str) -> float | None:
    """`HH:MM:SS.fffffffff` (Matroska's DURATION tag) in seconds; None when absent or malformed."""
    try:
        hours, minutes, seconds = clock.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def probe(path: str | os.PathLike, *, ignore_errors: bool = False) -> VideoInfo:
    """Describe the video at `path`; raise InputError for anything that is not a usable video.

    A file whose header promises more than it holds is damaged or truncated:
    that is an InputError naming the first missing frame, unless
    `ignore_errors` (then `num_frames` is what can be read).
    """
    path = Path(path)
    with open_input(path) as container:
        stream = video_stream(container, path)
        first, pts, packet_end = _scan(container, stream, path)
        info = _describe(path, container, stream, first, pts, packet_end)
    if not info.num_frames:
        raise InputError(f"{path}: has no decodable video frames")
    if info.is_truncated and not ignore_errors:
        raise InputError(truncated_message(path, info.num_frames))
    return info


def truncated_message(path: Path, index: int) -> str:
    return (
        f"{path}: frame {index} could not be decoded (the file is damaged or truncated); "
        "use --ignore-errors to keep the frames that decode"
    )


def _scan(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path
) -> tuple[av.VideoFrame, list[int], int | None]:
    """One demux pass: decode until the first frame appears, count every video packet.

    Returns the first frame, the packets' presentation times (sorted) and the
    latest end (pts + duration) among packets that carry a duration.
    """
    for other in container.streams:
        if other is not stream:
            other.discard = Discard.all
    first: av.VideoFrame | None = None
    pts: list[int] = []
    end: int | None = None
    try:
        for packet in container.demux(stream):
            if first is None:
                first = next(iter(stream.decode(packet)), None)
            if packet.size == 0 or packet.pts is None:
                continue
            pts.append(packet.pts)
            if packet.duration:
                end = max(end or packet.pts, packet.pts + packet.duration)
    except av.FFmpegError:
        pass  # damage mid-file: what was read is what there is
    if first is None:
        raise InputError(f"{path}: frame 0 could not be decoded (the file is damaged or truncated)")
    pts.sort()
    return first, pts, end


def _describe(
    path: Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    first: av.VideoFrame,
    pts: list[int],
    packet_end: int | None,
) -> VideoInfo:
    time_base = stream.time_base or Fraction(1, 1)
    rotation = int(first.rotation) % 360
    width, height = first.width, first.height
    sar = stream.sample_aspect_ratio  # the container's, else the codec's (H.264/HEVC store it in-band)
    sar = Fraction(sar) if sar and sar > 0 else Fraction(1)
    if rotation in (90, 270):
        width, height, sar = height, width, 1 / sar
    span = _span(pts, packet_end)
    duration = float(span * time_base) if span else float(container.duration or 0) / av.time_base
    fps = stream.average_rate or (Fraction(len(pts)) / Fraction(duration) if duration else Fraction(0))
    pix_fmt = first.format.name
    declared = Declared.of(stream)
    end = float((pts[0] + span) * time_base) if pts else 0.0
    missing = declared.first_missing(len(pts), end, 1 / float(fps) if fps else 0.0)
    colour = tags_of(first)
    return VideoInfo(
        path=path,
        container=container.format.name,
        stream_index=stream.index,
        codec=codec_name(stream),
        width=width,
        height=height,
        coded_width=first.width,
        coded_height=first.height,
        rotation=rotation,
        fps=Fraction(fps),
        nominal_fps=Fraction(stream.guessed_rate or stream.base_rate or fps),
        time_base=Fraction(time_base),
        start_pts=pts[0] if pts else 0,
        num_frames=len(pts),
        declared_frames=declared.frames,
        is_truncated=missing is not None,
        duration=duration,
        pix_fmt=pix_fmt,
        bit_depth=max(c.bits for c in av.VideoFormat(pix_fmt).components),
        color_primaries=colour.primaries,
        color_trc=colour.trc,
        colorspace=colour.matrix,
        color_range=colour.range,
        is_vfr=is_variable(pts, time_base),
        streams=tuple(_other_streams(container.streams)),
        interlaced=bool(first.interlaced_frame),
        sample_aspect_ratio=sar,
    )


def _span(pts: list[int], packet_end: int | None) -> int:
    """Video duration in time-base ticks: first frame start to last frame end."""
    if not pts:
        return 0
    if packet_end is not None and packet_end > pts[-1]:
        return packet_end - pts[0]
    step = (pts[-1] - pts[0]) // (len(pts) - 1) if len(pts) > 1 else 0
    return pts[-1] - pts[0] + step


def is_variable(pts: list[int], time_base: Fraction) -> bool:
    """Frame intervals differ by more than timestamp rounding: variable frame rate.

    Rounding is one tick, or a millisecond (Matroska and WebM store whole
    milliseconds, so their constant-rate video has 41/42 ms steps), plus 1%.
    """
    deltas = [b - a for a, b in zip(pts, pts[1:])]
    if len(deltas) < 2:
        return False
    mean = (pts[-1] - pts[0]) / len(deltas)
    tolerance = max(1.0, 1 / (1000 * float(time_base))) + 0.01 * mean
    return any(abs(d - mean) > tolerance for d in deltas)


def _other_streams(streams: Iterable[av.stream.Stream]) -> Iterable[StreamInfo]:
    for stream in streams:
        if stream.type in ("audio", "subtitle", "data", "attachment"):
            title = stream.metadata.get("title")
            yield StreamInfo(stream.index, stream.type, codec_name(stream), stream.language, title)

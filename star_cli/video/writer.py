"""Encode frames as they arrive into a new file that keeps the source's timing and streams.

The output video uses the source's time base and the caller's timestamps, so
variable-frame-rate sources stay variable; audio and subtitles come across
through `StreamCopier`. Everything goes to a hidden temporary file next to
`dest` that replaces it only when the whole file was written.

`rehearse()` writes a one-frame version of the file into memory, header to trailer,
so that what would fail at the end of a long run fails before it starts.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

from star_cli.atomic import atomic_output
from star_cli.errors import InputError, StarError
from star_cli.video.colour import MATRICES, PRIMARIES, RANGES, TRANSFERS, code_of, encode_matrix, is_hd, output_tags
from star_cli.video.encoding import check_container, choose_pix_fmt, encoder_options, records_pixel_shape
from star_cli.video.options import ENCODERS, EncodeOptions
from star_cli.video.probe import VideoInfo
from star_cli.video.remux import StreamCopier


@contextmanager
def _library_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at the null device for the block.

    Encoders print their refusals straight to it (SVT-AV1: "Source Width must be less
    than or equal to 16384", twice); the rehearsal reports the failure in one line.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class VideoWriter:
    """Context manager writing `dest`: video encoded from RGB frames + the source's other streams.

    `warnings` lists a pixel shape the file cannot record and the source streams
    that were re-encoded or dropped (known once the block is entered);
    `frames_written` counts encoded frames. Frames must be (N, height, width, 3)
    uint8 RGB with strictly increasing `pts` in the source's time base (as
    `read_batches` yields them).
    """

    def __init__(
        self,
        dest: str | os.PathLike,
        source: VideoInfo,
        width: int,
        height: int,
        options: EncodeOptions = EncodeOptions(),
        *,
        start_pts: int = 0,
        end_seconds: float | None = None,
    ) -> None:
        if options.codec not in ENCODERS:
            raise InputError(f"unknown codec {options.codec!r}; choose one of: {', '.join(ENCODERS)}")
        if width < 1 or height < 1:
            raise InputError(f"output size {width}x{height} is empty")
        self.dest = Path(dest)
        if not self.dest.parent.is_dir():
            raise InputError(f"{self.dest}: the folder {self.dest.parent} does not exist")
        self.source = source
        self.width, self.height = width, height
        self.options = options
        self._encoder_options = encoder_options(options)
        muxer = check_container(self.dest, options.codec)
        self.pix_fmt = choose_pix_fmt(options, source.bit_depth, width, height, source.pix_fmt)
        full_range = source.color_range == "pc" or source.pix_fmt.startswith("yuvj")
        self.tags = output_tags(
            source.colour,
            height,
            width=width,
            rgb=av.VideoFormat(self.pix_fmt).is_rgb,
            full_range=full_range,
            source_hd=is_hd(source.width, source.height),
        )
        # A segment (--start/--end) starts at 0 in the output; its audio is cut to the same times.
        self.start_pts = start_pts
        self._span = (float(start_pts * source.time_base), end_seconds)
        self._tag_codes = (
            code_of(PRIMARIES, self.tags.primaries),
            code_of(TRANSFERS, self.tags.trc),
            code_of(MATRICES, self.tags.matrix),
            code_of(RANGES, self.tags.range),
        )
        self.warnings = [] if records_pixel_shape(muxer, options.codec) else self._pixel_shape_lost()
        self.transcode_streams: frozenset[int] = frozenset()  # source streams re-encoded, not copied
        self.frames_written = 0
        self._last_pts: int | None = None
        self._reformatter = VideoReformatter()
        self._atomic = atomic_output(self.dest)

    def __enter__(self) -> VideoWriter:
        tmp = self._atomic.__enter__()
        self._converter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="star-rgb-to-yuv")
        try:
            self._output = av.open(str(tmp), "w")
            self._video = self._add_video_stream(self._output)
            self._copier = StreamCopier(
                self.source.path,
                self._output,
                self.source.stream_index,
                transcode=self.transcode_streams,
                span=self._span,
            )
        except BaseException as error:
            self._abort(type(error), error, error.__traceback__)
            raise
        self.warnings.extend(self._copier.warnings)
        return self

    def _pixel_shape_lost(self) -> list[str]:
        """The warning that this file cannot keep the source's non-square pixels (none when they are square)."""
        sar = self.source.sample_aspect_ratio
        if sar == 1:
            return []
        # FFV1 is written to Matroska (players open no other file of it), where nothing records it; AV1 keeps it in MP4.
        remedy = "--codec h264 or hevc keeps it" if self.options.codec == "ffv1" else (
            "write .mp4 instead, or .mkv with --codec h264 or hevc"
        )
        return [
            f"{self.dest.name}: {self.options.codec} in a {self.dest.suffix} file cannot record the source's "
            f"non-square pixels (sample aspect ratio {sar.numerator}:{sar.denominator}): players show it "
            f"{self.width}x{self.height} instead of {round(self.width * sar)}x{self.height}; {remedy}"
        ]

    def rehearse(self) -> None:
        """Write one black frame and the source's first other packets into memory, trailer included.

        A frame size the encoder refuses, or a stream the container cannot hold, fails
        here (InputError) instead of after the engine's work. A stream the container
        takes but cannot write (Opus in MOV, 6-channel PCM in MP4) is re-encoded
        instead, as the real file will then do; the streams it can write stay copied.
        """
        with _library_stderr_silenced():
            if self._rehearsal(streams=frozenset()) is None:
                return
            carried = frozenset(s.index for s in self.source.streams if s.kind in ("audio", "subtitle"))
            if carried and self._rehearsal(streams=carried) is None:
                self.transcode_streams = self._fewest_transcoded(carried)
                return
            video_error = self._rehearsal(streams=None)
        encoder = ENCODERS[self.options.codec]
        if video_error is not None:
            raise InputError(
                f"{self.dest}: {self.options.codec} ({encoder}) cannot encode {self.width}x{self.height} "
                f"{self.pix_fmt} video ({video_error}); choose another --scale or --codec"
            )
        raise InputError(f"{self.dest}: a {self.dest.suffix} file cannot hold the source's other streams; use .mkv")

    def _fewest_transcoded(self, carried: frozenset[int]) -> frozenset[int]:
        """Of `carried` (all re-encoded: a file that can be written), those that cannot be copied instead.

        One stream at a time is tried copied beside the others' current choice, so one
        stream the container refuses does not cost the others their untouched packets.
        """
        transcoded = set(carried)
        for index in sorted(carried):
            if self._rehearsal(streams=frozenset(transcoded - {index})) is None:
                transcoded.discard(index)
        return frozenset(transcoded)

    def _rehearsal(self, *, streams: frozenset[int] | None) -> str | None:
        """The error of a one-frame trial of this file in memory, or None when it can be written.

        `streams`: the source streams to re-encode, the others copied as the real file
        will; None: the video alone.
        """
        stand_in = io.BytesIO()
        stand_in.name = self.dest.name
        try:
            output = av.open(stand_in, "w")
            try:
                video = self._add_video_stream(output)
                copier = None
                if streams is not None:
                    copier = StreamCopier(
                        self.source.path,
                        output,
                        self.source.stream_index,
                        transcode=streams,
                        span=self._span,
                    )
                try:
                    black = self._to_frame(np.zeros((self.height, self.width, 3), np.uint8), 0)
                    packets = video.encode(black) + video.encode(None)
                    for packet in packets:  # x265 dates a lone frame's decoding with a B-frame delay it never measured
                        packet.dts = packet.pts
                    output.mux(packets)
                    if copier is not None:
                        copier.rehearse()
                finally:
                    if copier is not None:
                        copier.close()
            finally:
                output.close()
        except (av.FFmpegError, ValueError, OSError) as error:
            return str(error).split(": '", 1)[0] or type(error).__name__
        return None

    def _add_video_stream(self, output: av.container.OutputContainer) -> av.VideoStream:
        encoder = ENCODERS[self.options.codec]
        if encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # errors only: SVT-AV1 prints its banner straight to stderr
        rate = self.source.fps or self.source.nominal_fps or None
        stream = output.add_stream(encoder, rate=rate, options=self._encoder_options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, self.pix_fmt
        ctx = stream.codec_context
        ctx.time_base = self.source.time_base
        stream.time_base = self.source.time_base
        ctx.thread_count = 0
        ctx.thread_type = "FRAME"  # x264 frame threads, as ffmpeg runs it: PyAV's default (slices) is slower and larger
        if encoder == "libx265" and output.format.name in ("mp4", "mov"):
            ctx.codec_tag = "hvc1"  # Apple players refuse HEVC tagged hev1 (FFmpeg's default)
        ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = self._tag_codes
        if self.source.sample_aspect_ratio != 1:  # both sides scale alike: the pixels keep their shape
            ctx.sample_aspect_ratio = self.source.sample_aspect_ratio
        return stream

    def write(self, frames: np.ndarray, pts: Sequence[int]) -> None:
        """Encode (N, height, width, 3) uint8 RGB `frames` shown at `pts` (source time base, increasing)."""
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise ValueError(
                f"expected (N, {self.height}, {self.width}, 3) uint8 frames, got {frames.shape} {frames.dtype}"
            )
        stamps = self._checked(len(frames), pts)
        if not stamps:
            return
        self._encode(self._converted(frames, stamps))
        self._finish_batch(stamps[-1])

    def _converted(self, frames: np.ndarray, stamps: list[int]) -> Iterator[av.VideoFrame]:
        """Convert frame i+1 on the worker thread while frame i is encoded (swscale releases the GIL)."""
        upcoming = self._converter.submit(self._to_frame, frames[0], stamps[0])
        for i in range(len(stamps)):
            frame = upcoming.result()
            if i + 1 < len(stamps):
                upcoming = self._converter.submit(self._to_frame, frames[i + 1], stamps[i + 1])
            yield frame

    def write_frames(self, frames: Sequence[av.VideoFrame], pts: Sequence[int]) -> None:
        """Encode frames already at the output size in `self.pix_fmt`, converted with `self.tags` (YUV paths)."""
        stamps = self._checked(len(frames), pts)
        if not stamps:
            return
        for frame, stamp in zip(frames, stamps):
            self._stamp(frame, stamp)
        self._encode(iter(frames))
        self._finish_batch(stamps[-1])

    @property
    def matrix(self) -> Colorspace:
        """The RGB->YUV matrix the output is tagged with (what conversions into it must use)."""
        return encode_matrix(self.tags)

    @property
    def color_range(self) -> ColorRange:
        """The range the output's YUV is in (what conversions into it must produce)."""
        return ColorRange.JPEG if self.tags.range == "pc" else ColorRange.MPEG

    def _checked(self, count: int, pts: Sequence[int]) -> list[int]:
        if len(pts) != count:
            raise ValueError(f"{count} frames but {len(pts)} timestamps")
        stamps = [int(p) for p in pts]
        for before, after in zip([self._last_pts, *stamps], stamps):
            if before is not None and after <= before:
                raise ValueError(f"timestamps must increase: {after} after {before}")
        return stamps

    def _encode(self, frames: Iterator[av.VideoFrame]) -> None:
        try:
            for frame in frames:
                self._output.mux(self._video.encode(frame))
                self.frames_written += 1
        except av.FFmpegError as error:
            raise StarError(f"{self.dest}: writing failed: {error}") from None

    def _finish_batch(self, last: int) -> None:
        self._last_pts = last
        try:
            self._copier.mux_until(float((last - self.start_pts) * self.source.time_base))
        except av.FFmpegError as error:
            raise StarError(f"{self.dest}: writing failed: {error}") from None

    def _stamp(self, frame: av.VideoFrame, stamp: int) -> None:
        """Tag `frame` as the output is tagged and place it at `stamp` (shifted so a segment starts at 0)."""
        frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = self._tag_codes
        frame.pts, frame.time_base = stamp - self.start_pts, self.source.time_base

    def _to_frame(self, rgb: np.ndarray, stamp: int) -> av.VideoFrame:
        """RGB array -> frame in the output pixel format, converted with the matrix it is tagged with.

        The array is wrapped, not copied (swscale reads it in place): at 1080p
        a copy costs as much as the colour conversion itself.
        """
        frame = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(rgb), format="rgb24")
        out = self._reformatter.reformat(
            frame,
            format=self.pix_fmt,
            src_color_range=ColorRange.JPEG,
            dst_colorspace=self.matrix,
            dst_color_range=self.color_range,
            threads=0,
        )
        self._stamp(out, stamp)
        return out

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._abort(exc_type, exc, tb)
            return
        try:
            if not self.frames_written:
                raise StarError(f"{self.dest}: no frames were written, so no video was made")
            self._converter.shutdown()
            self._output.mux(self._video.encode(None))
            self._copier.finish()
            self._output.close()
        except BaseException as error:
            self._abort(type(error), error, error.__traceback__)
            if isinstance(error, av.FFmpegError):
                raise StarError(f"{self.dest}: could not finish writing: {error}") from None
            raise
        self._atomic.__exit__(None, None, None)

    def _abort(
        self, exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Release everything and let `atomic_output` delete the partial file."""
        self._converter.shutdown(cancel_futures=True)
        for closable in (getattr(self, "_copier", None), getattr(self, "_output", None)):
            if closable is not None:
                try:
                    closable.close()
                except (av.FFmpegError, OSError, ValueError):
                    pass  # already failing; the partial file is about to be removed
        try:
            self._atomic.__exit__(exc_type, exc, tb)
        except BaseException as error:
            if error is not exc:
                raise


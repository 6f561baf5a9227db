"""Carry a source's audio and subtitle streams into a new file, interleaved with its video.

Packets are copied untouched (same timestamps, so audio duration and the A/V
offset do not move) whenever the output container can hold the codec. Only
when it cannot: audio is re-encoded (AAC, or Opus for WebM, which takes no
AAC), text subtitles are converted to the container's text format (mov_text
for MP4/MOV, WebVTT for WebM), and streams nothing can carry (bitmap
subtitles in MP4, data tracks such as timecodes, attachments outside
Matroska) are dropped with a warning the caller can show. A container that takes
a stream's codec but cannot write it (Opus in MOV fails at the header, 6-channel PCM
in MP4 at the trailer) is found by the writer's rehearsal, which then names the
streams to re-encode in `transcode`; the others are still copied.

A segment (--start/--end) keeps the text cues on screen during it: a cue begun before
the start is shown from the start, one running past the end stops at the end.

Timestamps that go back (a second file concatenated onto the first) would make the
muxer fail part-way: such a stream's later packets are shifted to continue it.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
from av.stream import Discard

from star_cli.video.probe import codec_name

# The text-subtitle format each output container family takes.
_TEXT_SUBTITLES = {"mp4": "mov_text", "mov": "mov_text", "ipod": "mov_text", "matroska": "ass",
                   "webm": "webvtt"}
_ATTACHMENT_CONTAINERS = {"matroska"}
_KEPT_METADATA = ("language", "title")
_INTERLEAVE_SECONDS = 10.0
"""How far apart in time a file's streams may be stored: past a segment's end by this much, all are."""


@dataclass
class _Route:
    """How one source stream reaches the output: copied, or decoded and re-encoded."""

    source: av.stream.Stream
    target: av.stream.Stream
    transcode: bool
    offset: int = 0  # added to pts/dts: continues a timeline that started over
    last_dts: int | None = None
    last_duration: int = 0
    cues: bool = field(init=False)  # text subtitles: a packet is one cue, timed by the packet alone

    def __post_init__(self) -> None:
        self.cues = self.source.type == "subtitle" and self.source.codec.text_sub


class StreamCopier:
    """Moves every audio/subtitle stream of `source` into `output` as the video is written.

    Streams are added to `output` on construction, so build this before the
    first video packet is muxed (that writes the header). Call `mux_until(t)`
    after each batch of video to keep the file interleaved, then `finish()`.
    The main video (`video_index`) is the caller's to write; other video
    streams (cover art, extra angles) are dropped with a warning.
    """

    def __init__(
        self,
        source: Path,
        output: av.container.OutputContainer,
        video_index: int,
        *,
        transcode: Collection[int] = (),
        span: tuple[float, float | None] = (0.0, None),
    ) -> None:
        """`transcode`: indices of the audio streams to re-encode and text subtitles to convert, not copy."""
        self.output = output
        self.transcode = frozenset(transcode)
        self.span = span  # (start, end) seconds kept of the source (a --start/--end segment); start becomes 0
        self.video_index = video_index
        self.warnings: list[str] = []
        self.input = av.open(str(source), metadata_errors="replace")
        self.routes: dict[int, _Route] = {}
        for stream in self.input.streams:
            route = self._route(stream)
            if route is not None:
                _copy_metadata(stream, route.target)
                self.routes[stream.index] = route
        carried = [r.source for r in self.routes.values() if r.source.type != "attachment"]
        for stream in self.input.streams:
            if stream not in carried:
                stream.discard = Discard.all  # the video is read by the reader, not here
        if carried and span[0] > 0:
            self.input.seek(int(span[0] * av.time_base), backward=True)
        self._packets: Iterator[av.Packet] = self.input.demux(carried) if carried else iter(())
        self._pending: av.Packet | None = None

    def _route(self, stream: av.stream.Stream) -> _Route | None:
        kind, codec = stream.type, codec_name(stream)
        if stream.index == self.video_index:
            return None
        if kind == "video":
            return self._drop(stream, f"extra video stream {codec}: only the main video is written")
        if kind == "attachment":
            if self.output.format.name in _ATTACHMENT_CONTAINERS:
                return _Route(stream, self.output.add_stream_from_template(stream), False)
            return self._drop(stream, f"attachment {codec}: only Matroska holds attachments")
        if kind == "data":
            return self._drop(stream, f"data stream {codec}: data tracks are not carried over")
        if stream.codec_context is None:  # an unknown codec (a damaged header): nothing can copy or decode it
            return self._drop(stream, f"{kind} stream of unknown codec")
        if stream.index not in self.transcode:
            try:
                return _Route(stream, self.output.add_stream_from_template(stream), False)
            except ValueError:
                pass
        if kind == "audio":
            return _Route(stream, self._audio_encoder(stream, codec), True)
        text_format = _TEXT_SUBTITLES.get(self.output.format.name)
        if kind == "subtitle" and stream.codec.text_sub and text_format:
            return _Route(stream, self._subtitle_encoder(stream, text_format), True)
        return self._drop(stream, f"{kind} {codec}: {self.output.format.name} cannot hold it")

    def _drop(self, stream: av.stream.Stream, why: str) -> None:
        self.warnings.append(f"dropped stream #{stream.index} ({why})")
        return None

    def _audio_encoder(self, stream: av.AudioStream, codec: str) -> av.AudioStream:
        name = "aac" if "aac" in self.output.supported_codecs else "libopus"
        rates = av.Codec(name, "w").audio_rates or [stream.rate]
        rate = stream.rate if stream.rate in rates else max(rates)
        target = self.output.add_stream(name, rate=rate)
        # An unordered layout ("6 channels", as PCM in Matroska may have) gets FFmpeg's default
        # order for its channel count: encoders take named layouts only.
        layout = stream.layout
        target.layout = layout if not layout.name.endswith("channels") else av.AudioLayout(f"{len(layout.channels)}c")
        self.warnings.append(
            f"re-encoded audio stream #{stream.index} ({codec} -> {name}): "
            f"{self.output.format.name} cannot hold {codec}"
        )
        return target

    def _subtitle_encoder(self, stream: av.SubtitleStream, name: str) -> av.SubtitleStream:
        stream.codec_context.open(strict=False)
        target = self.output.add_stream(name)
        target.codec_context.subtitle_header = stream.codec_context.subtitle_header
        target.codec_context.time_base = stream.time_base
        target.time_base = stream.time_base
        return target

    def mux_until(self, seconds: float | None) -> None:
        """Mux source packets that start at or before `seconds` of the output (all that remain if None)."""
        start, end = self.span
        while True:
            packet = self._pending if self._pending is not None else next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            at = _seconds(packet)
            if seconds is not None and at - start > seconds:
                self._pending = packet
                return
            if end is not None and at >= end:
                if at >= end + _INTERLEAVE_SECONDS:  # every stream is past the segment: stop reading
                    self._packets = iter(())
                continue
            if self.routes[packet.stream.index].cues:
                if not _fit_cue(packet, start, end):
                    continue
            elif start and at < start:  # before the segment (at 0, audio priming may sit before 0: keep it)
                continue
            self._mux(self._shifted(packet, start))

    @staticmethod
    def _shifted(packet: av.Packet, start: float) -> av.Packet:
        """`packet` moved `start` seconds earlier, so a segment's streams start at 0 like its video."""
        if start and packet.time_base:
            ticks = round(start / packet.time_base)
            if packet.pts is not None:
                packet.pts -= ticks
            if packet.dts is not None:
                packet.dts -= ticks
        return packet

    def finish(self) -> None:
        """Mux everything left, flush the encoders and release the source."""
        self.mux_until(None)
        self._flush()
        self.close()

    def rehearse(self, packets: int = 64) -> None:
        """Mux the source's first `packets` packets and flush the encoders (a trial run into memory)."""
        for packet in itertools.islice(self._packets, packets):
            self._mux(packet)
        self._flush()

    def _flush(self) -> None:
        for route in self.routes.values():
            if route.transcode and route.target.type == "audio":
                self.output.mux(route.target.encode(None))

    def close(self) -> None:
        self.input.close()

    def _mux(self, packet: av.Packet) -> None:
        route = self.routes[packet.stream.index]
        _continue_timeline(route, packet)
        if not route.transcode:
            if packet.size and (packet.pts is not None or packet.dts is not None):
                packet.stream = route.target
                self.output.mux(packet)
        elif route.target.type == "audio":
            for frame in route.source.decode(packet if packet.size else None):
                self.output.mux(route.target.encode(frame))
        elif packet.size:
            self._mux_subtitle(route, packet)

    def _mux_subtitle(self, route: _Route, packet: av.Packet) -> None:
        """Re-encode one cue as the target's format; the cue keeps the source packet's timing."""
        cue = route.source.codec_context.decode2(packet)
        if cue is None or not len(cue):
            return
        out = route.target.codec_context.encode_subtitle(cue)
        out.pts, out.dts, out.duration = packet.pts, packet.pts, packet.duration
        out.time_base = packet.time_base
        out.stream = route.target
        self.output.mux(out)


def _continue_timeline(route: _Route, packet: av.Packet) -> None:
    """Shift `packet` by the route's offset, growing it when the stream's timeline starts over."""
    if packet.dts is None:
        return
    dts = packet.dts + route.offset
    if route.last_dts is not None and dts < route.last_dts:  # equal stamps (subtitle cues) are legal
        shift = route.last_dts + max(1, route.last_duration) - dts
        route.offset += shift
        dts += shift
    if route.offset:
        packet.dts = dts
        if packet.pts is not None:
            packet.pts += route.offset
    route.last_dts, route.last_duration = dts, packet.duration or 0


def _fit_cue(packet: av.Packet, start: float, end: float | None) -> bool:
    """Cut a text cue to the part of it shown in [`start`, `end`) seconds; False when none is.

    A cue's text carries no times (SubRip, ASS in Matroska, mov_text, WebVTT packets):
    moving the packet's start and shortening its duration moves the cue.
    """
    if packet.pts is None or not packet.time_base:
        return _seconds(packet) >= start
    first, stop = packet.pts, packet.pts + (packet.duration or 0)
    low = round(start / packet.time_base)
    if first < low:
        if stop <= low:  # over before the segment starts (or of unknown length)
            return False
        first = low
    if end is not None:
        stop = min(stop, round(end / packet.time_base))
    if packet.duration:
        packet.duration = stop - first
    packet.pts = packet.dts = first
    return True


def _copy_metadata(source: av.stream.Stream, target: av.stream.Stream) -> None:
    """Language and title travel with the stream; so do its default/forced flags."""
    for key in _KEPT_METADATA:
        if key in source.metadata:
            target.metadata[key] = source.metadata[key]
    target.disposition = source.disposition


def _seconds(packet: av.Packet) -> float:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return float(stamp * packet.time_base) if stamp is not None and packet.time_base else 0.0

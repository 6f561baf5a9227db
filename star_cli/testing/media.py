"""Synthetic video clips made at test time, so no test depends on checked-in media.

Every clip is a smooth gradient with a small moving square (deterministic from
`seed`), optionally with a sine-wave audio track, a text subtitle track, a
display-matrix rotation, irregular (VFR) timestamps, and abrupt palette changes
at `cut_at` so scene detection has real shot boundaries to find.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 48_000
SINE_HZ = 440.0

# Codecs each container family can hold, so a test only names the container.
_AUDIO_CODEC = {".mp4": "aac", ".mov": "aac", ".m4v": "aac", ".mkv": "libopus", ".webm": "libopus"}
_SUBTITLE_CODEC = {".mp4": "mov_text", ".mov": "mov_text", ".m4v": "mov_text",
                   ".mkv": "subrip", ".webm": "webvtt"}

# Encoder settings chosen for speed and fidelity on tiny frames, not for size.
_VIDEO_OPTIONS = {
    "libx264": {"preset": "veryfast", "crf": "12"},
    "libx265": {"preset": "ultrafast", "crf": "12", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "12", "b": "0"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "crf": "8", "b": "1M"},
    "libsvtav1": {"preset": "12", "crf": "20"},
}

# Shot palettes far apart in colour, so a cut is a cut and motion is not.
_PALETTES = np.array(
    [(230, 60, 50), (40, 200, 70), (50, 80, 230), (230, 210, 40), (200, 50, 220), (40, 210, 220)],
    dtype=np.float32,
)

# A minimal ASS header: the text subtitle encoders parse it before the first cue.
_ASS_HEADER = (
    b"[Script Info]\r\nScriptType: v4.00+\r\nPlayResX: 384\r\nPlayResY: 288\r\n\r\n"
    b"[V4+ Styles]\r\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, "
    b"OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, "
    b"Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\r\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\r\n"
    b"\r\n[Events]\r\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, "
    b"Effect, Text\r\n"
)

# VFR clips use frame durations cycling through these many half-frame ticks
# (mean 2 ticks = one nominal frame), so average fps still equals `fps`.
_VFR_TICKS = (1, 3, 2)


def shot_index(index: int, cut_at: Sequence[int]) -> int:
    """Which shot frame `index` belongs to, given the first frames of new shots."""
    return bisect.bisect_right(sorted(cut_at), index)


def pattern_frame(index: int, width: int, height: int, *, seed: int = 0, shot: int = 0) -> np.ndarray:
    """Frame `index` of the moving pattern as (height, width, 3) uint8 RGB.

    A vertical/horizontal brightness ramp over the shot's palette colour, plus a
    white square that moves two pixels a frame: enough structure and motion for
    codecs and the upscaler, while frames of one shot stay close in colour.
    """
    colour = _PALETTES[(seed + shot) % len(_PALETTES)]
    ramp = np.outer(np.linspace(0.45, 1.0, height), np.linspace(0.6, 1.0, width)).astype(np.float32)
    image = ramp[..., None] * colour
    side = max(2, min(width, height) // 4)
    x = (seed * 7 + 2 * index) % max(1, width - side)
    y = (seed * 5 + index) % max(1, height - side)
    image[y : y + side, x : x + side] = 245.0
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def frame_ticks(frames: int, vfr: bool) -> list[int]:
    """Presentation times in half-frame ticks (time base = 1 / (2 * fps))."""
    steps = [_VFR_TICKS[i % len(_VFR_TICKS)] if vfr else 2 for i in range(frames - 1)]
    return list(itertools.accumulate(steps, initial=0)) if frames else []


def make_video(
    path: str | os.PathLike,
    *,
    frames: int = 24,
    width: int = 64,
    height: int = 48,
    fps: Fraction = Fraction(24),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: bool = True,
    subtitles: bool = False,
    rotation: int = 0,
    vfr: bool = False,
    seed: int = 0,
    cut_at: Sequence[int] = (),
    interlaced: bool = False,
) -> Path:
    """Write a synthetic clip to `path` (container chosen by its extension) and return it.

    `rotation` is stored as a display matrix, counter-clockwise degrees (the
    convention of PyAV's `VideoFrame.rotation`); pixels are stored unrotated.
    `interlaced` (libx264 only) codes top-field-first interlaced frames whose two fields
    are the pattern half a frame apart: its moving square is combed, as on tape transfers.
    """
    if interlaced and codec != "libx264":
        raise ValueError(f"interlaced clips are written with libx264, not {codec}")
    path = Path(path)
    suffix = path.suffix.lower()
    time_base = 1 / (2 * Fraction(fps))
    ticks = frame_ticks(frames, vfr)
    with av.open(str(path), "w") as container:
        options = dict(_VIDEO_OPTIONS.get(codec, {}), **({"x264-params": "tff=1"} if interlaced else {}))
        video = container.add_stream(codec, rate=Fraction(fps), options=options)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = time_base
        if rotation:
            video.set_display_rotation(rotation)
        sound = _add_audio(container, suffix) if audio else None
        text = _add_subtitles(container, suffix) if subtitles else None
        for index, tick in enumerate(ticks):
            shot = shot_index(index, cut_at)
            rgb = pattern_frame(2 * index if interlaced else index, width, height, seed=seed, shot=shot)
            if interlaced:  # the bottom field, half a frame later
                rgb[1::2] = pattern_frame(2 * index + 1, width, height, seed=seed, shot=shot)[1::2]
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = tick, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        seconds = float((ticks[-1] + 2) * time_base) if ticks else 0.0
        if sound is not None:
            _write_sine(container, sound, seconds)
        if text is not None:
            _write_cues(container, text, seconds)
    return path


def make_audio(path: str | os.PathLike, *, seconds: float = 1.0) -> Path:
    """An audio-only file (the sine track alone): a video tool must refuse it clearly."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        _write_sine(container, _add_audio(container, path.suffix.lower()), seconds)
    return path


def decode_rgb(path: str | os.PathLike) -> np.ndarray:
    """Every frame of `path`'s first video stream as uint8 RGB (N, H, W, 3): what tests compare outputs by."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def faststart_copy(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Remux an MP4 with its index first: the layout whose truncation still leaves a readable head."""
    with av.open(str(src)) as inp, av.open(str(dest), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return Path(dest)


def truncate(path: str | os.PathLike, fraction: float) -> Path:
    """Cut a file to its first `fraction` of bytes, like an interrupted download."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _add_audio(container: av.container.OutputContainer, suffix: str) -> av.AudioStream:
    stream = container.add_stream(_AUDIO_CODEC.get(suffix, "aac"), rate=AUDIO_RATE)
    stream.layout = "mono"
    stream.metadata["language"] = "eng"
    return stream


def _write_sine(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    """A 440 Hz tone as long as the video, in 1024-sample frames."""
    total = int(round(seconds * AUDIO_RATE))
    for start in range(0, total, 1024):
        n = min(1024, total - start)
        t = (np.arange(start, start + n) / AUDIO_RATE).astype(np.float32)
        samples = (0.3 * np.sin(2 * np.pi * SINE_HZ * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _add_subtitles(container: av.container.OutputContainer, suffix: str) -> av.SubtitleStream:
    stream = container.add_stream(_SUBTITLE_CODEC.get(suffix, "mov_text"))
    stream.codec_context.subtitle_header = _ASS_HEADER
    stream.codec_context.time_base = Fraction(1, 1000)
    stream.time_base = Fraction(1, 1000)
    stream.metadata["language"] = "fra"
    return stream


def _write_cues(container: av.container.OutputContainer, stream: av.SubtitleStream, seconds: float) -> None:
    """Two cues splitting the clip in halves (times in milliseconds)."""
    half = max(1, int(seconds * 500))
    for number, start in enumerate((0, half)):
        cue = av.subtitles.subtitle.SubtitleSet.create(
            f"{number},0,Default,,0,0,0,,cue {number}".encode(), 0, half, pts=start
        )
        packet = stream.codec_context.encode_subtitle(cue)
        packet.stream = stream
        packet.time_base = Fraction(1, 1000)
        container.mux(packet)

"""A part of a video chosen by `--start`/`--end`: parsed, then located on the video's own frames.

Restorers try settings on a few seconds before spending hours on a whole film, so
a segment must be cheap to reach: it is found by demuxing packets (no decoding),
read after a seek to the keyframe before it, and its audio is cut to the same times.
Positions are times (`90`, `1:30`, `1:02:03.5` seconds) or frame numbers (`2160f`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.stream import Discard

from star_cli.errors import InputError
from star_cli.video.probe import open_input, video_stream

_CLOCK = re.compile(r"(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class Position:
    """A point in a video: a frame number, or seconds from its first frame."""

    frame: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str, option: str) -> Position:
        """`2160f` (frame), `90` / `90.5` / `1:30` / `1:02:03.5` (time); InputError otherwise."""
        value = text.strip().lower()
        if value.endswith("f") and value[:-1].isdigit():
            return cls(frame=int(value[:-1]))
        match = _CLOCK.fullmatch(value)
        if not match:
            raise InputError(f"{option} must be a time (90, 1:30, 1:02:03.5) or a frame number (2160f), got '{text}'")
        parts = [p for p in match.groups() if p is not None]
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + float(part)
        return cls(seconds=seconds)


@dataclass(frozen=True)
class Segment:
    """Frames [first, end) of the video; `start_pts`/`end_pts` in its time base (end_pts None: to the end)."""

    first: int
    end: int
    start_pts: int
    end_pts: int | None
    time_base: Fraction

    @property
    def frames(self) -> int:
        return self.end - self.first

    @property
    def start_seconds(self) -> float:
        return float(self.start_pts * self.time_base)

    @property
    def end_seconds(self) -> float | None:
        return None if self.end_pts is None else float(self.end_pts * self.time_base)


def _index(position: Position, stamps: list[int], origin: int, time_base: Fraction) -> int:
    """The first frame at or after `position` (len(stamps) when past the end)."""
    if position.frame is not None:
        return position.frame
    limit = origin + Fraction(position.seconds or 0) / time_base
    return next((i for i, stamp in enumerate(stamps) if stamp >= limit - Fraction(1, 2)), len(stamps))


def find_segment(path: Path, start: Position | None, end: Position | None) -> Segment:
    """Locate `start`..`end` among the frames of `path` (end exclusive); InputError if it holds no frame."""
    with open_input(path) as container:
        stream = video_stream(container, path)
        for other in container.streams:
            if other is not stream:
                other.discard = Discard.all
        try:
            stamps = sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
        except av.FFmpegError as error:
            raise InputError(f"{path}: cannot be read to find --start/--end: {error}") from None
        time_base = Fraction(stream.time_base or Fraction(1, 1))
    if not stamps:
        raise InputError(f"{path}: has no video frames")
    origin = stamps[0]
    first = _index(start, stamps, origin, time_base) if start else 0
    last = min(_index(end, stamps, origin, time_base), len(stamps)) if end else len(stamps)
    if first >= len(stamps):
        raise InputError(f"--start is past the end of {path} ({len(stamps)} frames)")
    if last <= first:
        raise InputError(f"--end must come after --start: the segment of {path} holds no frame")
    return Segment(first, last, stamps[first], stamps[last] if last < len(stamps) else None, time_base)

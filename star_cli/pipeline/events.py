"""What a running upscale reports, as plain data: the progress event stream.

The pipeline never prints. It hands these events to a `ProgressCallback`; the CLI
turns them into a rich bar or plain log lines (star_cli.report), and a program
using the Python API can show them however it likes. Nothing here imports rich
or torch, so a callback costs its caller nothing but its own work.

Order for each file: `FileStarted`, then `Evaluated` (STAR: one per model
evaluation, i.e. per chunk x tile x step x guidance branch), `FramesWritten` and
`WindowFinished` as they happen, then `FileFinished` or `FileSkipped`. `Notice`
can come at any time (loading messages, warnings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("text", "vae_encode", "sampling", "vae_decode", "io")
"""The stages `--verbose` times: prompt encoding, VAE encode, sampling, VAE decode, and reading + writing."""
ENGINE_STAGES = ("vae_encode", "sampling", "vae_decode", "resize")
"""The stages that are the engine's own compute (`--verbose`: engine compute vs total)."""


@dataclass(frozen=True)
class FileStarted:
    """A file's upscale begins: `index` of `count` (1-based), with the work it will take."""

    index: int
    count: int
    source: Path
    dest: Path | None
    frames: int
    windows: int
    evaluations: int  # model evaluations of the whole file (0 for engines without a model)
    work_folder: Path | None = None  # where finished windows are kept for --resume (STAR only)


@dataclass(frozen=True)
class Evaluated:
    """`done` of `total` model evaluations of the current file are finished."""

    done: int
    total: int


@dataclass(frozen=True)
class FramesWritten:
    """`done` of `total` output frames of the current file are encoded."""

    done: int
    total: int


@dataclass(frozen=True)
class WindowFinished:
    """Window `index` (0-based) of `count` is restored; `seconds` per stage, for this window."""

    index: int
    count: int
    seconds: dict[str, float] = field(default_factory=dict)
    replayed: bool = False  # taken from the work folder of an interrupted run (--resume)


@dataclass(frozen=True)
class FileFinished:
    """A file is written; `seconds` per stage over the whole file."""

    source: Path
    dest: Path | None
    seconds: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0  # seconds from the file's start to its last frame written

    def engine_seconds(self) -> float:
        """The engine's own compute among the stages (the host's threads should hide the rest behind it)."""
        return sum(self.seconds.get(stage, 0.0) for stage in ENGINE_STAGES)


@dataclass(frozen=True)
class FileSkipped:
    """A file of a folder could not be read and was left out (the run goes on with the others)."""

    source: Path
    reason: str

    @classmethod
    def of(cls, source: Path, error: Exception) -> FileSkipped:
        """The skip `error` caused, its reason without the file name it starts with (shown beside it)."""
        return cls(source, str(error).removeprefix(f"{source}: "))


@dataclass(frozen=True)
class Notice:
    """A line for the user: `level` is 'info' (e.g. which model loads) or 'warning'."""

    text: str
    level: str = "info"


Event = FileStarted | Evaluated | FramesWritten | WindowFinished | FileFinished | FileSkipped | Notice
ProgressCallback = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The callback of a caller that wants no progress."""


class EvaluationCounter:
    """Turns an engine's per-call evaluation counts into `Evaluated` events (pass `add` to the engine)."""

    def __init__(self, total: int, progress: ProgressCallback) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def add(self, count: int) -> None:
        self.done = min(self.total, self.done + count)
        self.progress(Evaluated(self.done, self.total))

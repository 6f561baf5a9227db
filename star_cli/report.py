"""The CLI's view of an upscale's progress events: a rich bar on a terminal, plain lines in a log.

On a terminal the bar of a STAR run counts model evaluations (chunk x tile x step
x branch), so it moves inside a window, with an ETA from the measured seconds per
evaluation and the frames written beside it. When stderr is not a terminal (logs,
nohup, CI) one plain line is printed at each window and at least every
`LOG_INTERVAL` seconds. `--quiet` prints only warnings; `--verbose` adds the
seconds of each stage per window and per file.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from star_cli.pipeline.events import (
    STAGES,
    Evaluated,
    Event,
    FileFinished,
    FileSkipped,
    FileStarted,
    FramesWritten,
    Notice,
    WindowFinished,
)
from star_cli.terminal import message

LOG_INTERVAL = 30.0
"""Seconds between plain progress lines when stderr is not a terminal."""

STAGE_NAMES = {"text": "text", "vae_encode": "VAE encode", "sampling": "sampling", "vae_decode": "VAE decode",
               "io": "I/O", "resize": "resize"}


def kept_windows_line(done: int, windows: int, folder: Path) -> str:
    """What an interrupted STAR run says it kept."""
    return (
        f"interrupted: {done} finished window(s) of {windows} kept in {folder}; "
        "run the same command with --resume to continue from them"
    )


def clock_text(seconds: float) -> str:
    """1:05:03 / 4:07 style."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def compute_text(compute: float, total: float) -> str:
    """'engine compute X s, total Y s (Z x the engine)': the host's overhead on top of the engine."""
    ratio = f" ({total / compute:.2f}x the engine)" if compute > 0 else ""
    return f"engine compute {compute:.2f} s, total {total:.2f} s{ratio}"


def stages_text(seconds: dict[str, float]) -> str:
    """'VAE encode 1.2 s, sampling 30.1 s, ...' in pipeline order."""
    order = [*STAGES, *(s for s in seconds if s not in STAGES)]
    return ", ".join(f"{STAGE_NAMES.get(s, s)} {seconds[s]:.1f} s" for s in order if s in seconds)


class _FileState:
    """What is known of the file being upscaled, for bars, log lines and the Ctrl-C message."""

    def __init__(self, event: FileStarted) -> None:
        self.event = event
        self.started = time.monotonic()
        self.evaluated = 0
        self.first_evaluation: float | None = None
        self.written = 0
        self.windows_done = 0

    def eta(self) -> float | None:
        """Seconds left: measured seconds per unit of work (evaluations, else frames) times what is left."""
        total, done = (self.event.evaluations, self.evaluated) if self.event.evaluations else (self.event.frames, self.written)
        elapsed = time.monotonic() - self.started
        if not done or not elapsed:
            return None
        return elapsed / done * (total - done)

    def line(self) -> str:
        e = self.event
        parts = [f"{self.prefix()}{e.source.name}:"]
        if e.evaluations:
            parts.append(f"window {min(self.windows_done + 1, e.windows)}/{e.windows},")
            parts.append(f"{self.evaluated}/{e.evaluations} model evaluations ({100 * self.evaluated // e.evaluations}%),")
        elapsed = time.monotonic() - self.started
        fps = f" ({self.written / elapsed:.1f} fps)" if self.written and elapsed else ""
        parts.append(f"{self.written}/{e.frames} frames written{fps}, elapsed {clock_text(elapsed)}")
        eta = self.eta()
        if eta is not None:
            parts[-1] += f", ETA {clock_text(eta)}"
        return " ".join(parts)

    def prefix(self) -> str:
        return f"file {self.event.index} of {self.event.count}: " if self.event.count > 1 else ""


class ConsoleReport:
    """A progress callback for `star upscale` (use as a context manager around the run)."""

    def __init__(self, console: Console, *, quiet: bool = False, verbose: bool = False, live: bool | None = None) -> None:
        self.console = console
        self.quiet, self.verbose = quiet, verbose
        self.live = console.is_terminal if live is None else live
        self.file: _FileState | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = 0.0

    def __enter__(self) -> ConsoleReport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            if exc_type is not None:  # a failed run leaves only its error line
                self._bar.live.transient = True
            self._bar.stop()
            self._bar = None

    def interrupted_message(self) -> str:
        """What Ctrl-C leaves behind: the finished windows of a STAR run stay for --resume."""
        state = self.file
        if state is None or state.event.work_folder is None:
            return "interrupted: no partial output was kept"
        return kept_windows_line(state.windows_done, state.event.windows, state.event.work_folder)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice):
            self._notice(event)
        elif isinstance(event, FileSkipped):
            self._print(message(f"skipped {event.source}: {event.reason}", "warning:", "yellow"), force=True)
        elif isinstance(event, FileStarted):
            self._start(event)
        elif self.file is not None:
            self._update(event)

    def _print(self, text: str | Text, *, force: bool = False) -> None:
        """Print a line: `str` is rich markup (ours), `Text` prints as it reads (paths, user text)."""
        if force or not self.quiet:
            (self._bar.console if self._bar is not None else self.console).print(text, highlight=False, soft_wrap=True)

    def _notice(self, event: Notice) -> None:
        if event.level == "warning":
            self._print(message(event.text, "warning:", "yellow"), force=True)
        else:
            self._print(message(event.text))

    def _start(self, event: FileStarted) -> None:
        self.file = _FileState(event)
        self._last_line = time.monotonic()
        if self.quiet:
            return
        if not self.live:
            return  # the first plain line comes with the first window, or after LOG_INTERVAL
        columns = [TextColumn("{task.description}", style="bold", markup=False), BarColumn()]  # file names are not markup
        if event.evaluations:
            columns.append(TextColumn("{task.completed}/{task.total} evaluations  frames {task.fields[written]}/" + str(event.frames)))
        else:
            columns.append(TextColumn("{task.completed}/{task.total} frames"))
        columns += [TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}")]
        self._bar = Progress(*columns, console=self.console, transient=False)
        self._bar.start()
        total = event.evaluations or event.frames
        self._task = self._bar.add_task(self.file.prefix() + event.source.name, total=total, written=0, eta="-")

    def _update(self, event: Event) -> None:
        state = self.file
        assert state is not None
        if isinstance(event, Evaluated):
            state.evaluated = event.done
        elif isinstance(event, FramesWritten):
            state.written = event.done
        elif isinstance(event, WindowFinished):
            state.windows_done = event.index + 1
            if self.verbose and event.seconds:
                self._print(message(f"{state.prefix()}window {event.index + 1}/{event.count}: {stages_text(event.seconds)}"))
            elif self.verbose and event.replayed:
                self._print(f"window {event.index + 1}/{event.count}: taken from the interrupted run")
        elif isinstance(event, FileFinished):
            self._finish(event)
            return
        if self.quiet:
            return
        if self._bar is not None and self._task is not None:
            eta = state.eta()
            done = state.evaluated if state.event.evaluations else state.written
            self._bar.update(self._task, completed=done, written=state.written, eta="-" if eta is None else clock_text(eta))
        elif not self.live:
            now = time.monotonic()
            if isinstance(event, WindowFinished) or now - self._last_line >= LOG_INTERVAL:
                self._last_line = now
                self._print(message(state.line()))

    def _finish(self, event: FileFinished) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.file is not None:
            self._print(message(self.file.line()))  # the log's last word on the file
        if self.verbose and event.seconds:
            self._print(message(f"{event.source.name}: total {stages_text(event.seconds)}"))
            self._print(message(f"{event.source.name}: {compute_text(event.engine_seconds(), event.wall)}"))
        if event.dest is not None:
            self._print(message(str(Path(event.dest)), "wrote", "green"))
        self.file = None

"""How a run meets its terminal: stop signals and the error stream.

- SIGTERM (service managers, `kill`, container stops) and SIGHUP (a closed terminal
  or SSH session) stop a run exactly as Ctrl-C does: they raise `Terminated`, a
  KeyboardInterrupt, so every `finally` and `atomic_output` cleans up, and the
  exit code is 128 + the signal number (143, 129), as a shell reports it.
- Messages hold paths, and paths may hold "[red]" or "\\[": every line is built as a
  rich `Text` (`message`), never parsed as markup.
- stderr is only a report: a reader that goes away (a closed pipe, `2>&-`) must
  not fail a job that is otherwise fine. `stderr_console` writes through a stream
  that, at its first failure, points file descriptor 2 at the null device (so
  FFmpeg's and Python's own later writes succeed too) and drops the text.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

EXIT_INTERRUPTED = 130
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """A stop signal other than SIGINT, raised in the main thread like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    for other in STOP_SIGNALS:  # one clean stop: a repeated signal must not break the cleanup
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into `Terminated` for the block (main thread only: where Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_terminated) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class KeptWork(KeyboardInterrupt):
    """Ctrl-C or a stop signal after which finished work was kept: `line` says what and where."""

    def __init__(self, interrupt: KeyboardInterrupt, line: str) -> None:
        super().__init__(line)
        self.line, self.exit_code = line, interrupt_exit_code(interrupt)


def interrupt_exit_code(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + N for signal N."""
    if isinstance(interrupt, KeptWork):
        return interrupt.exit_code
    return 128 + interrupt.signum if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


class _TolerantStream:
    """A text stream that forwards to `target` until a write fails, then discards (see the module doc)."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._broken = False

    def _failed(self) -> None:
        self._broken = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._target.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass  # not a real file descriptor (a test runner's buffer): dropping the text is enough

    def write(self, text: str) -> int:
        if not self._broken:
            try:
                self._target.write(text)
                self._target.flush()
            except (OSError, ValueError):
                self._failed()
        return len(text)

    def flush(self) -> None:
        if not self._broken:
            try:
                self._target.flush()
            except (OSError, ValueError):
                self._failed()

    def isatty(self) -> bool:
        try:
            return not self._broken and self._target.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._target.fileno()

    def __getattr__(self, name: str) -> Any:  # encoding, errors, ...: as the target has them
        return getattr(self._target, name)


def stderr_console() -> Console:
    """A rich console on stderr that never fails the run because stderr went away."""
    return Console(file=_TolerantStream(sys.stderr))


def message(text: str, label: str = "", style: str = "") -> Text:
    """One line printed exactly as `text` reads, after an optional styled `label` ("error:", "wrote")."""
    return Text.assemble((label, style), " ", text) if label else Text(text, style=style)

"""Errors the user can act on.

Anything raised as a `StarError` reaches the user as one line on stderr and a
non-zero exit code; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class StarError(Exception):
    """A failure while running (exit code 1): the message is the whole report."""

    exit_code = 1


class InputError(StarError):
    """Bad input or usage (exit code 2): nothing was written, nothing was lost."""

    exit_code = 2


class ReportedElsewhere(StarError):
    """A failure another process reports (rank 0 of a distributed run); this one only exits with the code."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("")
        self.exit_code = exit_code


def skipped_videos(names: list[str], total: int, written: int) -> StarError:
    """How a folder run that went on past unreadable videos ends (exit 1): which were left out."""
    return StarError(f"{len(names)} of {total} videos could not be read and were skipped ({', '.join(names)}); "
                     f"the other {written} were written")

"""One run per output file: a lock beside the output, held for the whole run.

Two runs writing the same output would share its work folder: the second would
delete or mix the first one's windows. The lock is an OS file lock (`flock`, or
`msvcrt.locking` on Windows) on `.<name>.star-lock`, so it is released by the OS
whenever its process ends, SIGKILL included: a stale lock file never blocks a run.
The file holds the owner's PID only for the refusal message.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from star_cli.errors import InputError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


_LOCK_SUFFIX = ".star-lock"


def lock_path(dest: Path) -> Path:
    """The lock file of the run writing `dest`."""
    return dest.with_name(f".{dest.name}{_LOCK_SUFFIX}")


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _owner(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except (OSError, AttributeError):  # no pread on Windows
        text = ""
    return f"pid {text}" if text.isdigit() else "another process"


class OutputLock:
    """An exclusive claim on writing `dest` (and its work folder); see the module doc."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.path = lock_path(dest)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now, or refuse with one line naming the process that holds it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise InputError(f"cannot lock {self.dest}: {error.strerror or error}") from None
            if not _try_lock(fd):
                owner = _owner(fd)
                os.close(fd)
                raise InputError(f"another star run ({owner}) is writing {self.dest}: wait for it to finish or stop it")
            # A holder that was releasing may have unlinked the file we opened: lock the one on disk.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (unlinked while still held, so no one locks a file about to vanish)."""
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass  # Windows cannot unlink an open file: the next run reuses it
        os.close(self._fd)
        self._fd = None


def sweep_stale_locks(folder: Path) -> None:
    """Remove the lock files in `folder` that no live process holds (left by runs killed outright).

    Each is removed by taking its lock and releasing it, never by a bare unlink, which
    could delete a file another run has just opened to lock.
    """
    try:
        names = [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(_LOCK_SUFFIX)]
    except OSError:
        return
    for name in names:
        lock = OutputLock(folder / name.removeprefix(".").removesuffix(_LOCK_SUFFIX))
        try:
            lock.acquire()
        except InputError:
            continue  # held by a live run
        lock.release()


@contextmanager
def output_locks(dests: Iterable[Path]) -> Iterator[None]:
    """Hold the lock of every output in `dests` for the block (all taken before any work starts)."""
    with ExitStack() as stack:
        for dest in dests:
            lock = OutputLock(dest)
            lock.acquire()
            stack.callback(lock.release)
        yield

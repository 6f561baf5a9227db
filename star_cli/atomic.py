"""Write-then-rename, so a user never sees half a file where a good one belongs.

Temporary files carry their writer's PID in the name (`.<stem>.<pid>-<hex>.partial<suffix>`):
a run killed outright (SIGKILL, the OS's OOM killer) cannot remove its own, so the
next run into the same folder sweeps those whose process is gone (`sweep_orphans`).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PARTIAL = re.compile(r"\..*\.(\d+)-[0-9a-f]{8}\.partial(\.[^.]*)?")


def partial_path(dest: Path) -> Path:
    """A hidden sibling of `dest` that keeps its extension (muxers pick the format by it) and names our PID."""
    return dest.with_name(f".{dest.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{dest.suffix}")


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (True where we cannot tell: never sweep a live file).

    Windows has no signal 0 (os.kill would terminate the process), so there every owner counts as alive.
    """
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to another user
        return True
    return True


def sweep_orphans(folder: Path) -> list[Path]:
    """Remove the temporary files in `folder` left by processes that no longer exist; return them."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _PARTIAL.fullmatch(path.name)
        if match and path.is_file() and not process_alive(int(match.group(1))):
            try:
                path.unlink()
            except OSError:
                continue  # another run swept it first, or we may not: leave it
            removed.append(path)
    return removed


@contextmanager
def atomic_output(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `dest`'s folder; rename it onto `dest` only on success.

    On any exception (Ctrl-C included) the temporary file is removed and `dest`,
    if it existed, is left untouched.
    """
    dest = Path(dest)
    tmp = partial_path(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)

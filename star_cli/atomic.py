"""Write-then-rename, so a user never sees half a file where a good one belongs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_path(dest: Path) -> Path:
    """A hidden sibling of `dest` that keeps its extension (muxers pick the format by it)."""
    return dest.with_name(f".{dest.stem}.{uuid.uuid4().hex[:8]}.partial{dest.suffix}")


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

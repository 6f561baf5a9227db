"""Assertions shared by the CLI tests (imported by name; pytest puts this folder on sys.path)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
from click.testing import Result


def error_line(result: Result, exit_code: int = 2) -> str:
    """The single `error: ...` line of a failed run, after checking it is all the user saw."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every entry under `folder` (hidden ones too): files with size and content hash, folders marked."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        entries[key] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()) if path.is_file() else (-1, "folder")
    return entries


def partial_files(folder: Path) -> list[Path]:
    """Leftovers of `atomic_output` (`.<stem>.<hex>.partial<suffix>`) anywhere under `folder`."""
    return sorted(p for p in folder.rglob(".*.partial*"))


def packet_times(path: Path, kind: str) -> list[tuple[float, float]]:
    """(start, duration) in seconds of every packet of the first `kind` stream, in file order."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [
            (float(p.pts * p.time_base), float((p.duration or 0) * p.time_base))
            for p in container.demux(stream)
            if p.size and p.pts is not None
        ]


def same_times(a: list[tuple[float, float]], b: list[tuple[float, float]], tolerance: float = 1e-3) -> bool:
    """Two `packet_times` lists agree packet by packet within `tolerance` seconds."""
    return len(a) == len(b) and all(abs(x - y) <= tolerance for pa, pb in zip(a, b) for x, y in zip(pa, pb))

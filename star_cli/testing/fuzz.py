"""Damaged copies of a clip, and the contract a run on one must keep.

A `Mutation` flips bytes, zeroes a block or truncates a clip at a place drawn from a
seed. `check_run` runs `star upscale` on a damaged copy in-process and reports how it
broke the contract, or None when it behaved:
- exit 0: stderr holds only `warning:` lines, the output exists and decodes;
- exit 2: exactly one `error:` line (bad input: the damage was found and named);
- never a traceback, never another exit code;
- nothing left behind but the output: no partial file, no lock, no work folder.
tests/cli/test_cli_fuzz.py runs a few dozen cases; benchmarks/fuzz_media.py thousands.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
from typer.testing import CliRunner

from star_cli.cli import app

KINDS = ("flip", "zero", "truncate")


@dataclass(frozen=True)
class Mutation:
    """One kind of damage at `offset`: flip `count` bytes from there, zero `count` bytes, or cut the file there."""

    kind: str
    offset: int
    count: int

    def apply(self, data: bytes) -> bytes:
        if self.kind == "truncate":
            return data[: self.offset]
        damaged = bytearray(data)
        end = min(len(damaged), self.offset + self.count)
        for i in range(self.offset, end):
            damaged[i] = 0 if self.kind == "zero" else damaged[i] ^ 0xFF
        return bytes(damaged)

    def __str__(self) -> str:
        return f"{self.kind}@{self.offset}" + ("" if self.kind == "truncate" else f"x{self.count}")


def mutations(size: int, count: int, seed: int) -> list[Mutation]:
    """`count` mutations of a `size`-byte file, spread over the whole file (headers and index included)."""
    rng = random.Random(seed)
    found = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        offset = rng.randrange(1, size)
        found.append(Mutation(kind, offset, rng.choice((1, 2, 8, 64, 512))))
    return found


def _decodes(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return next(container.decode(video=0), None) is not None
    except (av.FFmpegError, OSError, ValueError, StopIteration):
        return False


def check_run(source: Path, mutation: Mutation, folder: Path, *extra: str) -> str | None:
    """Run `star upscale` on `source` damaged by `mutation` inside an empty `folder`; None if it behaved."""
    folder.mkdir(parents=True, exist_ok=True)
    damaged = folder / f"in{source.suffix}"
    damaged.write_bytes(mutation.apply(source.read_bytes()))
    dest = folder / "out.mkv"
    args = ["upscale", str(damaged), "-o", str(dest), "--engine", "lanczos", "--scale", "2", "--preset", "ultrafast", "-q", *extra]
    result = CliRunner().invoke(app, args)
    lines = result.stderr.strip().splitlines()
    problem = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problem = f"raised {result.exception!r}"
    elif result.exit_code == 0:
        if any(not line.startswith("warning: ") for line in lines):
            problem = f"exit 0 but stderr: {result.stderr!r}"
        elif not _decodes(dest):
            problem = "exit 0 but the output does not decode"
    elif result.exit_code == 2:
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problem = f"exit 2 with stderr: {result.stderr!r}"
    else:
        problem = f"exit {result.exit_code}: {result.stderr.strip()!r}"
    left = sorted(p.name for p in folder.iterdir() if p not in (damaged, dest))
    if problem is None and left:
        problem = f"left behind: {left}"
    shutil.rmtree(folder)
    return problem

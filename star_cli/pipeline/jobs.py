"""Which files an `upscale` call reads and writes, checked before any work starts.

Every refusal here happens before a byte is written, so a bad call never costs
the user anything they had.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from star_cli.errors import InputError
from star_cli.video.files import list_videos

OUTPUT_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm"})
"""Containers we write (the writer knows their codec and stream rules)."""


@dataclass(frozen=True)
class Job:
    """One input video and the path its upscaled version goes to."""

    source: Path
    dest: Path


def plan_jobs(
    input_path: Path, output_path: Path, *, overwrite: bool, dry_run: bool = False, resume: bool = False
) -> list[Job]:
    """Pair inputs with outputs: a file with a file, a folder with a folder.

    An existing output is refused without `overwrite`, except in a dry run (which only
    looks) and under `resume` (the caller tells a finished output from an interrupted one).
    """
    if not input_path.exists():
        raise InputError(f"input not found: {input_path}")
    if input_path.is_dir():
        sources = list_videos(input_path)
        _check_output_folder(input_path, output_path)
        jobs = [Job(src, output_path / _output_name(src)) for src in sources]
        _check_distinct(jobs)
    else:
        jobs = [Job(input_path, output_path)]
    for job in jobs:
        _check_job(job, overwrite=overwrite or resume, dry_run=dry_run, made=input_path.is_dir())
    return jobs


def _check_output_folder(input_path: Path, output_path: Path) -> None:
    if output_path.exists() and not output_path.is_dir():
        raise InputError(f"output must be a folder for a folder input: {output_path} is a file")
    if output_path.is_dir() and os.path.samefile(output_path, input_path):
        raise InputError(f"the output folder is the input folder: {output_path} (choose another)")
    if not output_path.exists() and output_path.suffix.lower() in OUTPUT_SUFFIXES:
        raise InputError(f"a folder input is written to a folder: {output_path} is named like a video file")
    if not output_path.parent.is_dir():
        raise InputError(f"output folder {output_path} cannot be made: {output_path.parent} does not exist")


def _check_distinct(jobs: list[Job]) -> None:
    """Two inputs of a folder may not share an output name (x.avi and x.mkv both become x.mkv)."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.dest in seen:
            raise InputError(f"{seen[job.dest].name} and {job.source.name} would both be written to {job.dest}: rename one of them")
        seen[job.dest] = job.source


def _output_name(source: Path) -> str:
    """Keep the name; move containers we cannot write into mkv, which holds any stream."""
    suffix = source.suffix.lower()
    return source.name if suffix in OUTPUT_SUFFIXES else source.stem + ".mkv"


def _check_job(job: Job, *, overwrite: bool, dry_run: bool, made: bool = False) -> None:
    """Refuse a job that could not be written; `made`: its folder is made on the way if missing."""
    dest = job.dest
    if dest.is_dir():
        raise InputError(f"output is a folder, expected a file name: {dest}")
    if dest.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"unsupported output container '{dest.suffix}': use one of {', '.join(sorted(OUTPUT_SUFFIXES))}")
    if not dest.parent.is_dir() and not made:
        raise InputError(f"output folder does not exist: {dest.parent}")
    if dest.exists() and os.path.samefile(dest, job.source):
        raise InputError(f"output is the input file: {dest} (choose another name)")
    if dest.exists() and not overwrite and not dry_run:
        raise InputError(f"output exists: {dest} (use --overwrite to replace it)")
    writable = dest.parent if dest.parent.is_dir() else dest.parent.parent  # a folder output is made on the way
    if not dry_run and not os.access(writable, os.W_OK):
        raise InputError(f"cannot write to folder {writable}")

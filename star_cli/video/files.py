"""Which files are videos: one list of suffixes for `star upscale` folders, `star degrade` and training data."""

from __future__ import annotations

from pathlib import Path

from star_cli.errors import InputError

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".mpg", ".mpeg", ".3gp"}
)
"""Containers we read (by name only; `probe` decides whether a file really is a video)."""


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def list_videos(folder: Path) -> list[Path]:
    """Video files directly in `folder`, sorted by name; InputError when it is no folder or holds none.

    Hidden files are left out: macOS writes a `._NAME` resource file beside each video on
    exFAT/FAT drives, and our own temporary files are hidden.
    """
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    videos = sorted(p for p in folder.iterdir() if is_video_file(p) and not p.name.startswith("."))
    if not videos:
        raise InputError(f"no videos in folder {folder} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    return videos

"""Fuzz: clips with flipped bytes, zeroed blocks and truncations in many places keep the contract.

Exit 0 with a decodable output or exit 2 with one `error:` line; never a traceback; nothing
left behind (star_cli.testing.fuzz). 48 cases here; benchmarks/fuzz_media.py runs thousands.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from star_cli.testing.fuzz import Mutation, check_run, mutations
from star_cli.testing.media import faststart_copy, make_video

CASES_PER_CLIP = 16


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fuzz-clips")
    mp4 = make_video(folder / "plain.mp4", frames=12, width=32, height=24)
    return {
        "mp4": mp4,  # index (moov) at the end
        "faststart": faststart_copy(mp4, folder / "fast.mp4"),  # index first
        "mkv": make_video(folder / "subs.mkv", frames=12, width=32, height=24, subtitles=True),
    }


@pytest.mark.parametrize("name", ["mp4", "faststart", "mkv"])
def test_damaged_clips_keep_the_contract(name, clips, tmp_path):
    source = clips[name]
    failures = []
    for index, mutation in enumerate(mutations(source.stat().st_size, CASES_PER_CLIP, seed=index_seed(name))):
        extra = ("--ignore-errors",) if index % 4 == 3 else ()
        problem = check_run(source, mutation, tmp_path / f"case{index}", *extra)
        if problem is not None:
            failures.append(f"{mutation} {' '.join(extra)}: {problem}")
    assert failures == [], "\n".join(failures)


def index_seed(name: str) -> int:
    return {"mp4": 1, "faststart": 2, "mkv": 3}[name]


BOXES = (b"moov", b"mvhd", b"trak", b"tkhd", b"mdhd", b"hdlr", b"stsd", b"avcC", b"mp4a", b"esds", b"stts", b"stsz", b"stco", b"mdat")


def test_damage_inside_each_mp4_box_keeps_the_contract(clips, tmp_path):
    """Targeted: each box name, and 512 bytes after it, in both tracks where there are two."""
    source = clips["mp4"]
    data = source.read_bytes()
    failures = []
    for box in BOXES:
        start = data.find(box)
        while start != -1:
            for mutation in (Mutation("flip", start, 4), Mutation("flip", start + 4, 512)):
                problem = check_run(source, mutation, tmp_path / "case")
                if problem is not None:
                    failures.append(f"{box.decode()} {mutation}: {problem}")
            start = data.find(box, start + 1)
    assert failures == [], "\n".join(failures)

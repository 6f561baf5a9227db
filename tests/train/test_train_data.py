"""Training clips: paired and HR sources, seeded crops, sharded resumable order, bad files skipped."""

from __future__ import annotations

import dataclasses
from itertools import islice
from pathlib import Path

import pytest
import torch

from star_cli.errors import InputError
from star_cli.testing.media import make_video
from star_cli.train.config import DataConfig
from star_cli.train.data import ClipDataset, ClipSampler, DataPosition, collate, scan_sources
from star_cli.video.probe import probe
from star_cli.video.reader import read_batches
from star_cli.video.writer import EncodeOptions, VideoWriter


def _quarter(src: Path, dest: Path) -> None:
    """Write `src` box-downscaled by 4, so the LQ shows exactly the GT content."""
    info = probe(src)
    with VideoWriter(dest, info, info.width // 4, info.height // 4, EncodeOptions(crf=0)) as out:
        for batch in read_batches(src, 8):
            n, h, w, _ = batch.frames.shape
            small = batch.frames.reshape(n, h // 4, 4, w // 4, 4, 3).mean(axis=(2, 4)).round().astype("uint8")
            out.write(small, batch.pts)


@pytest.fixture(scope="module")
def paired_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 96x96 GT clips: two with quarter-size LQ, one with same-size LQ (the same file)."""
    root = tmp_path_factory.mktemp("paired")
    for sub in ("gt", "lq", "text"):
        (root / sub).mkdir()
    for i in range(2):
        make_video(root / "gt" / f"c{i}.mp4", frames=8, width=96, height=96, seed=i, audio=False)
        _quarter(root / "gt" / f"c{i}.mp4", root / "lq" / f"c{i}.mp4")
        (root / "text" / f"c{i}.txt").write_text(f"clip number {i}\n", encoding="utf-8")
    make_video(root / "gt" / "same.mp4", frames=8, width=96, height=96, seed=5, audio=False)
    (root / "lq" / "same.mp4").write_bytes((root / "gt" / "same.mp4").read_bytes())
    make_video(root / "gt" / "short.mp4", frames=2, width=96, height=96, audio=False)
    make_video(root / "lq" / "short.mp4", frames=2, width=24, height=24, audio=False)
    make_video(root / "gt" / "lonely.mp4", frames=8, width=96, height=96, audio=False)
    return root


def _cfg(root: Path, **changes: object) -> DataConfig:
    return dataclasses.replace(DataConfig(root=root, num_frames=4, crop_height=80, crop_width=64, caption_dropout=0.0),
                               **changes)


def test_scan_pairs_by_name_and_reports_what_it_leaves_out(paired_root: Path) -> None:
    sources, problems = scan_sources(_cfg(paired_root))
    assert sorted(s.gt.stem for s in sources) == ["c0", "c1", "same"]
    assert {s.gt.stem: s.caption for s in sources}["c0"] == "clip number 0"
    text = "\n".join(problems)
    assert "lonely.mp4: no lq/ video" in text and "short.mp4: 2 frames" in text
    with pytest.raises(InputError, match="no usable training clips"):
        scan_sources(_cfg(paired_root, num_frames=50))


def test_samples_are_seeded_and_crops_line_up(paired_root: Path) -> None:
    sources, _ = scan_sources(_cfg(paired_root))
    data = ClipDataset(sources, _cfg(paired_root), seed=3)
    index = {s.gt.stem: i for i, s in enumerate(sources)}
    same = data[(0, 0, index["same"])]
    assert same["gt"].shape == same["lq"].shape == (3, 4, 80, 64)
    assert torch.equal(same["gt"], same["lq"])  # same-size LQ: exactly the GT window
    assert same["caption"] == "" and same["skipped"] == []
    quarter = data[(0, 1, index["c0"])]
    assert torch.equal(quarter["gt"], data[(0, 1, index["c0"])]["gt"])  # the key decides everything
    assert not torch.equal(quarter["gt"], data[(1, 1, index["c0"])]["gt"])  # another epoch, another window
    gt, lq = quarter["gt"], quarter["lq"]  # the x4 LQ, upscaled, covers the same window: any shift is worse
    aligned = (gt - lq).abs()[..., 8:-8, 8:-8].mean()
    for shift in ((4, 0), (-4, 0), (0, 4), (0, -4)):
        assert aligned < (gt - torch.roll(lq, shift, dims=(2, 3))).abs()[..., 8:-8, 8:-8].mean()
    assert quarter["gt"].min() >= -1 and quarter["gt"].max() <= 1


def test_caption_dropout(paired_root: Path) -> None:
    sources, _ = scan_sources(_cfg(paired_root))
    keys = [(0, p, 0) for p in range(6)]
    kept = ClipDataset(sources, _cfg(paired_root, caption_dropout=0.0), seed=0)
    dropped = ClipDataset(sources, _cfg(paired_root, caption_dropout=1.0), seed=0)
    assert all(kept[k]["caption"] == sources[0].caption != "" for k in keys)
    assert all(dropped[k]["caption"] == "" for k in keys)


def test_hr_source_degrades_on_the_fly(paired_root: Path) -> None:
    cfg = _cfg(paired_root / "gt", source="hr")
    sources, problems = scan_sources(cfg)
    assert len(sources) == 4 and any("short.mp4" in p for p in problems)
    item = ClipDataset(sources, cfg, seed=0)[(0, 0, 0)]
    assert item["gt"].shape == item["lq"].shape == (3, 4, 80, 64)
    assert (item["gt"] - item["lq"]).abs().mean() > 0.01
    again = ClipDataset(sources, cfg, seed=0)[(0, 0, 0)]
    assert torch.equal(item["lq"], again["lq"])


def test_a_file_that_breaks_mid_run_is_skipped_and_reported(paired_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    for sub in ("gt", "lq"):
        (root / sub).mkdir(parents=True)
        for stem in ("c0", "c1"):
            (root / sub / f"{stem}.mp4").write_bytes((paired_root / sub / f"{stem}.mp4").read_bytes())
    sources, _ = scan_sources(_cfg(root))
    (root / "gt" / "c0.mp4").write_bytes(b"\x00" * 100)  # damaged after start-up
    item = ClipDataset(sources, _cfg(root), seed=0)[(0, 0, 0)]
    assert len(item["skipped"]) == 1 and "c0.mp4" in item["skipped"][0]
    assert item["gt"].shape == (3, 4, 80, 64)  # the next clip took its place


def test_sampler_shards_and_resumes_exactly() -> None:
    ranks = [list(islice(ClipSampler(5, seed=1, rank=r, world=2), 9)) for r in range(2)]
    first_epoch = [key[2] for rank in ranks for key in rank if key[0] == 0]
    assert set(first_epoch) == set(range(5)) and len(first_epoch) == 6  # 5 clips wrapped to 3 per rank
    full = list(islice(ClipSampler(5, seed=1, rank=1, world=2), 9))
    resumed = list(islice(ClipSampler(5, seed=1, rank=1, world=2, start=DataPosition(0, 3)), 6))
    assert resumed == full[3:]


def test_collate_reports_the_next_position(paired_root: Path) -> None:
    sources, _ = scan_sources(_cfg(paired_root))
    data = ClipDataset(sources, _cfg(paired_root), seed=0)
    batch = collate([data[(2, 0, 0)], data[(2, 1, 1)]])
    assert batch["gt"].shape == (2, 3, 4, 80, 64) and len(batch["caption"]) == 2
    assert batch["next"] == DataPosition(2, 2)

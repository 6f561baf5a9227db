"""Training clips, streamed from disk and cropped at random, reproducibly.

Two sources:
- "paired": the layout users already have, root/gt/*.mp4 + root/lq/*.mp4 (same stem,
  LQ at any integer fraction of the GT size or the same size) + optional root/text/*.txt;
- "hr": HR videos in root (captions in root/text/<stem>.txt when present), degraded on
  the fly by `star_cli.train.degrade`.

Every random choice of a sample (frame window, crop, caption dropout, degradation) is
drawn from a seed derived from (seed, epoch, position), never from worker state, so a
run is the same with any number of loader workers and resumes exactly from a data
position. Frames are decoded in batches and cropped as they arrive, so memory holds
one crop, not one video. A file that fails to decode is reported and the next clip is
used instead: one bad file never stops a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from star_cli.diffusion.noise import derive_seed
from star_cli.errors import InputError, StarError
from star_cli.train.config import DataConfig
from star_cli.train.degrade import degrade_clip, read_caption
from star_cli.video.files import is_video_file, list_videos
from star_cli.video.probe import probe
from star_cli.video.reader import read_batches

_DECODE_BATCH = 16


@dataclass(frozen=True)
class ClipSource:
    """One training video (and its LQ partner in the paired layout), probed once at start-up."""

    gt: Path
    lq: Path | None
    caption: str
    frames: int
    height: int
    width: int
    lq_height: int
    lq_width: int
    fps: Fraction


@dataclass(frozen=True)
class DataPosition:
    """Where the sample stream stands: the next sample is `position` of `epoch` (per process)."""

    epoch: int = 0
    position: int = 0


def _videos_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (the paired layout needs gt/, lq/ and optionally text/)")
    return {p.stem: p for p in sorted(folder.iterdir()) if is_video_file(p)}


def _source(gt: Path, lq: Path | None, caption: str, cfg: DataConfig) -> ClipSource:
    """Probe the file(s) and check they can give one crop; InputError says why not."""
    info = probe(gt)
    frames, lq_h, lq_w = info.num_frames, info.height, info.width
    if lq is not None:
        lq_info = probe(lq)
        frames, lq_h, lq_w = min(frames, lq_info.num_frames), lq_info.height, lq_info.width
    if frames < cfg.num_frames:
        raise InputError(f"{gt.name}: {frames} frames, fewer than data.num_frames={cfg.num_frames}")
    if info.height < cfg.crop_height or info.width < cfg.crop_width:
        raise InputError(f"{gt.name}: {info.width}x{info.height} is smaller than the "
                         f"{cfg.crop_width}x{cfg.crop_height} crop")
    return ClipSource(gt, lq, caption, frames, info.height, info.width, lq_h, lq_w, info.fps)


def scan_sources(cfg: DataConfig) -> tuple[list[ClipSource], list[str]]:
    """Usable clips, and one line for every file left out (unreadable, too short or small, unpaired)."""
    root = Path(cfg.root)
    problems: list[str] = []
    pairs: list[tuple[Path, Path | None]] = []
    if cfg.source == "paired":
        gts, lqs = _videos_by_stem(root / "gt"), _videos_by_stem(root / "lq")
        problems += [f"gt/{gts[s].name}: no lq/ video with the same name" for s in gts if s not in lqs]
        problems += [f"lq/{lqs[s].name}: no gt/ video with the same name" for s in lqs if s not in gts]
        pairs = [(gts[s], lqs[s]) for s in gts if s in lqs]
    else:
        pairs = [(video, None) for video in list_videos(root)]
    sources = []
    for gt, lq in pairs:
        try:
            sources.append(_source(gt, lq, read_caption(root / "text" / f"{gt.stem}.txt"), cfg))
        except StarError as error:
            problems.append(str(error))
    if not sources:
        detail = f" ({problems[0]})" if problems else ""
        raise InputError(f"{root}: no usable training clips{detail}")
    return sources, problems


def read_crop(path: Path, start: int, count: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Frames [start, start+count) of `path` cropped to box (top, left, height, width), decoded in batches."""
    top, left, height, width = box
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    got = 0
    for batch in read_batches(path, _DECODE_BATCH):
        lo, hi = max(start - batch.start, 0), min(start + count - batch.start, len(batch.frames))
        if hi > lo:
            out[got:got + hi - lo] = batch.frames[lo:hi, top:top + height, left:left + width]
            got += hi - lo
        if got == count:
            return out
    raise StarError(f"{path}: ended after {start + got} frames, {start + count} needed")


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def _upsample(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """LQ to the crop size, bicubic like the reference's data preparation."""
    if tuple(frames.shape[-2:]) == size:
        return frames
    return F.interpolate(frames, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


class ClipDataset(Dataset):
    """Samples keyed by (epoch, position, index); returns gt/lq (3, F, H, W) in [-1, 1] and a caption."""

    def __init__(self, sources: list[ClipSource], cfg: DataConfig, seed: int) -> None:
        self.sources, self.cfg, self.seed = sources, cfg, seed

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, object]:
        epoch, position, index = key
        skipped: list[str] = []
        for attempt in range(len(self.sources)):
            source = self.sources[(index + attempt) % len(self.sources)]
            rng = np.random.default_rng(derive_seed(self.seed, epoch, position, attempt))
            try:
                gt, lq = self._load(source, rng)
            except StarError as error:
                skipped.append(f"{source.gt}: {error}")
                continue
            caption = "" if rng.uniform() < self.cfg.caption_dropout else source.caption
            return {"gt": gt, "lq": lq, "caption": caption, "skipped": skipped, "epoch": epoch, "position": position}
        raise StarError(f"no training clip could be read ({skipped[0]})")

    def _load(self, source: ClipSource, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        ch, cw = cfg.crop_height, cfg.crop_width
        start = int(rng.integers(0, source.frames - cfg.num_frames + 1))
        # Align the crop to the LQ pixel grid when the size ratio is an integer, so the
        # LQ window covers exactly the GT window.
        ay = source.height // source.lq_height if source.height % source.lq_height == 0 else 1
        ax = source.width // source.lq_width if source.width % source.lq_width == 0 else 1
        top = int(rng.integers(0, (source.height - ch) // ay + 1)) * ay
        left = int(rng.integers(0, (source.width - cw) // ax + 1)) * ax
        hr = _to_tensor(read_crop(source.gt, start, cfg.num_frames, (top, left, ch, cw)))
        if source.lq is None:
            gt, lq = degrade_clip(hr, cfg.degradation, int(rng.integers(2**62)), source.fps)
        else:
            sy, sx = source.lq_height / source.height, source.lq_width / source.width
            y0, x0 = math.floor(top * sy), math.floor(left * sx)
            y1, x1 = min(math.ceil((top + ch) * sy), source.lq_height), min(math.ceil((left + cw) * sx), source.lq_width)
            gt, lq = hr, _to_tensor(read_crop(source.lq, start, cfg.num_frames, (y0, x0, y1 - y0, x1 - x0)))
        lq = _upsample(lq, (ch, cw))
        return (gt * 2 - 1).transpose(0, 1).contiguous(), (lq * 2 - 1).transpose(0, 1).contiguous()


class ClipSampler(Sampler):
    """Endless stream of (epoch, position, index) keys for one process.

    Each epoch is a seeded permutation of the clips; process `rank` of `world` takes
    every world-th entry (the permutation wrapped so all ranks get the same count).
    Starting from a `DataPosition` continues a stream exactly.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, start: DataPosition = DataPosition()) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.per_rank = math.ceil(size / world)
        self.start = start

    def normalise(self, position: DataPosition) -> DataPosition:
        epochs, pos = divmod(position.position, self.per_rank)
        return DataPosition(position.epoch + epochs, pos)

    def _shard(self, epoch: int) -> list[int]:
        order = np.random.default_rng(derive_seed(self.seed, epoch)).permutation(self.size)
        wrapped = np.resize(order, self.per_rank * self.world)
        return wrapped[self.rank::self.world].tolist()

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        start = self.normalise(self.start)
        epoch, pos = start.epoch, start.position
        while True:
            shard = self._shard(epoch)
            for position in range(pos, self.per_rank):
                yield epoch, position, shard[position]
            epoch, pos = epoch + 1, 0


def collate(items: list[dict[str, object]]) -> dict[str, object]:
    """Stack a batch; `next` is the data position after its last sample."""
    last = items[-1]
    return {
        "gt": torch.stack([item["gt"] for item in items]),
        "lq": torch.stack([item["lq"] for item in items]),
        "caption": [item["caption"] for item in items],
        "skipped": [line for item in items for line in item["skipped"]],
        "next": DataPosition(int(last["epoch"]), int(last["position"]) + 1),
    }


def make_loader(dataset: ClipDataset, sampler: ClipSampler, batch_size: int, num_workers: int) -> DataLoader:
    """A loader whose own generator seeds its workers: creating it must not draw from the global
    RNG, which dropout uses and checkpoints restore (a resumed run would otherwise drift)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(sampler.seed))

"""Real-ESRGAN's high-order degradation, applied to whole video clips, plus real video compression.

The reference (Real-ESRGAN, and STAR's data scripts after it) draws a fresh kernel,
noise level and JPEG quality for every single frame, which makes LQ clips flicker in
a way no real video does. Here every random choice is drawn once per clip into a
`DegradationPlan` (seeded, so a clip's degradation is a pure function of its seed)
and then applied to all frames; only the noise itself differs from frame to frame.
A plan can be applied chunk by chunk, so `star degrade` streams long videos.

Order (heavy preset; `second_stage = false` gives the light one):
  USM-sharpened GT -> [blur -> random resize -> Gaussian/Poisson noise -> JPEG]
  -> [blur? -> random resize -> noise] -> {resize to 1/scale + sinc, JPEG} in random order
  -> real video codec (libx264 / mpeg4 / libvpx, crf or bitrate) on the LR clip.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from star_cli.atomic import atomic_output
from star_cli.diffusion.noise import derive_seed
from star_cli.errors import InputError, skipped_videos
from star_cli.terminal import message
from star_cli.train.compress import CRF_CODECS, VideoCompressor, compress_frames, jpeg
from star_cli.train.config import PRESETS, CompressionConfig, DegradationConfig, StageConfig
from star_cli.train.kernels import filter2d, random_blur_kernel, random_final_sinc
from star_cli.video.files import list_videos
from star_cli.video.probe import probe
from star_cli.video.reader import read_batches
from star_cli.video.writer import EncodeOptions, VideoWriter

RESIZE_MODES = ("area", "bilinear", "bicubic")
_GRAY = torch.tensor([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------- single operations


def usm_sharpen(frames: torch.Tensor, weight: float = 0.5, threshold: float = 10.0, radius: int = 50) -> torch.Tensor:
    """Unsharp masking as in Real-ESRGAN's USMSharp (OpenCV's sigma for a 101-tap kernel), edges only."""
    sigma = 0.3 * (radius - 1) + 0.8
    ax = torch.arange(-radius, radius + 1, dtype=torch.float64)
    line = torch.exp(-0.5 * (ax / sigma) ** 2)
    gaussian = torch.outer(line, line).float()
    gaussian /= gaussian.sum()
    residual = frames - filter2d(frames, gaussian)
    mask = ((residual.abs() * 255.0) > threshold).to(frames.dtype)
    soft = filter2d(mask, gaussian)
    sharp = (frames + weight * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * frames


def resize(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, size[0]), max(1, size[1]))
    if mode == "area":
        return F.interpolate(frames, size=size, mode="area")
    return F.interpolate(frames, size=size, mode=mode, align_corners=False)


def gaussian_noise(frames: torch.Tensor, sigma: float, gray: bool, generator: torch.Generator) -> torch.Tensor:
    """Add N(0, sigma/255) noise, per channel or one grey plane for all three."""
    n, c, h, w = frames.shape
    shape = (n, 1, h, w) if gray else (n, c, h, w)
    noise = torch.randn(shape, generator=generator, dtype=frames.dtype) * (sigma / 255.0)
    return (frames + noise.to(frames.device)).clamp(0, 1)


def poisson_noise(frames: torch.Tensor, scale: float, gray: bool, generator: torch.Generator) -> torch.Tensor:
    """Shot noise: photon counts at 2**ceil(log2(distinct levels)) per frame, scaled by `scale`."""
    source = (frames * _GRAY.to(frames).view(1, 3, 1, 1)).sum(1, keepdim=True) if gray else frames
    source = torch.round(source.clamp(0, 1) * 255.0) / 255.0
    levels = torch.tensor([2.0 ** math.ceil(math.log2(max(len(torch.unique(f)), 2))) for f in source],
                          dtype=frames.dtype).view(-1, 1, 1, 1)
    counts = torch.poisson((source * levels).cpu(), generator=generator)
    noise = (counts / levels - source.cpu()).to(frames.device)
    return (frames + scale * noise).clamp(0, 1)


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class NoiseChoice:
    kind: str  # "gaussian" (level = sigma on the 0..255 scale) or "poisson" (level = scale)
    level: float
    gray: bool


@dataclass(frozen=True)
class StagePlan:
    kernel: torch.Tensor | None
    resize_factor: float
    resize_mode: str
    noise: NoiseChoice
    jpeg_quality: float


@dataclass(frozen=True)
class CodecChoice:
    codec: str
    crf: int | None
    bpp: float | None


@dataclass(frozen=True)
class DegradationPlan:
    """Every random choice for one clip; applying it (`PlanApplier`) involves no further draws but the noise."""

    scale: int
    sharpen_gt: bool
    stage1: StagePlan
    stage2: StagePlan | None
    sinc_first: bool  # heavy only: [resize back + sinc] before the final JPEG
    final_mode: str
    sinc: torch.Tensor | None
    codec: CodecChoice | None
    noise_seed: int


def _pick(rng: np.random.Generator, options: tuple, probs: tuple[float, ...]) -> object:
    p = np.asarray(probs, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _sample_stage(rng: np.random.Generator, stage: StageConfig) -> StagePlan:
    kernel = random_blur_kernel(rng, stage) if rng.uniform() < stage.blur_prob else None
    direction = _pick(rng, ("up", "down", "keep"), stage.resize_probs)
    if direction == "up":
        factor = rng.uniform(1.0, stage.resize_range[1])
    elif direction == "down":
        factor = rng.uniform(stage.resize_range[0], 1.0)
    else:
        factor = 1.0
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    if rng.uniform() < stage.gaussian_noise_prob:
        kind, level = "gaussian", rng.uniform(*stage.noise_range)
    else:
        kind, level = "poisson", rng.uniform(*stage.poisson_scale_range)
    noise = NoiseChoice(kind, float(level), bool(rng.uniform() < stage.gray_noise_prob))
    return StagePlan(kernel, float(factor), mode, noise, float(rng.uniform(*stage.jpeg_range)))


def _sample_codec(rng: np.random.Generator, comp: CompressionConfig) -> CodecChoice | None:
    if rng.uniform() >= comp.prob:
        return None
    codec = str(_pick(rng, comp.codecs, comp.codec_probs))
    if codec in CRF_CODECS and rng.uniform() < comp.crf_prob:
        return CodecChoice(codec, int(rng.integers(comp.crf_range[0], comp.crf_range[1] + 1)), None)
    return CodecChoice(codec, None, float(rng.uniform(*comp.bpp_range)))


def sample_plan(cfg: DegradationConfig, seed: int) -> DegradationPlan:
    """Draw every choice for one clip from `seed`."""
    rng = np.random.default_rng(seed)
    stage1 = _sample_stage(rng, cfg.stage1)
    stage2 = _sample_stage(rng, cfg.stage2) if cfg.second_stage else None
    sinc_first = bool(rng.uniform() < 0.5)
    final_mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    sinc = random_final_sinc(rng, cfg.final_sinc_prob, cfg.stage1.kernel_sizes)
    codec = _sample_codec(rng, cfg.compression)
    return DegradationPlan(cfg.scale, cfg.sharpen_gt, stage1, stage2, sinc_first, final_mode, sinc, codec,
                           int(rng.integers(2**62)))


# ----------------------------------------------------------------------------- applying it


def _noise(frames: torch.Tensor, choice: NoiseChoice, generator: torch.Generator) -> torch.Tensor:
    if choice.kind == "gaussian":
        return gaussian_noise(frames, choice.level, choice.gray, generator)
    return poisson_noise(frames, choice.level, choice.gray, generator)


def _blur_resize_noise(x: torch.Tensor, stage: StagePlan, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    if stage.kernel is not None:
        x = filter2d(x, stage.kernel)
    return _noise(resize(x, size, stage.resize_mode), stage.noise, generator)


def _resize_sinc(x: torch.Tensor, plan: DegradationPlan, size: tuple[int, int]) -> torch.Tensor:
    x = resize(x, size, plan.final_mode)
    return filter2d(x, plan.sinc) if plan.sinc is not None else x


def lr_size(height: int, width: int, scale: int) -> tuple[int, int]:
    return height // scale, width // scale


class PlanApplier:
    """Applies one plan to consecutive chunks of a clip (same choices, noise continuing).

    Input frames are (N, 3, H, W) float in [0, 1]; `gt` returns the training target
    (sharpened when the plan says so) and `synthetic` the 8-bit LR frames before
    video compression, which the caller runs once over the whole clip.
    """

    def __init__(self, plan: DegradationPlan) -> None:
        self.plan = plan
        self.generator = torch.Generator().manual_seed(plan.noise_seed)

    def gt(self, hr: torch.Tensor) -> torch.Tensor:
        return usm_sharpen(hr) if self.plan.sharpen_gt else hr

    def synthetic(self, gt: torch.Tensor) -> torch.Tensor:
        plan, gen = self.plan, self.generator
        h, w = gt.shape[-2:]
        out = lr_size(h, w, plan.scale)
        s1 = plan.stage1
        x = _blur_resize_noise(gt, s1, (round(h * s1.resize_factor), round(w * s1.resize_factor)), gen)
        x = jpeg(x, s1.jpeg_quality)
        if plan.stage2 is None:
            x = _resize_sinc(x, plan, out)
        else:
            s2 = plan.stage2
            x = _blur_resize_noise(x, s2, (round(out[0] * s2.resize_factor), round(out[1] * s2.resize_factor)), gen)
            if plan.sinc_first:
                x = jpeg(_resize_sinc(x, plan, out), s2.jpeg_quality)
            else:
                x = _resize_sinc(jpeg(x, s2.jpeg_quality), plan, out)
        return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def codec_settings(choice: CodecChoice, height: int, width: int, fps: Fraction) -> dict[str, object]:
    """Keyword arguments for `VideoCompressor` / `compress_frames` (bitrate from bits per pixel)."""
    if choice.crf is not None:
        return {"crf": choice.crf}
    return {"bitrate": max(1000, int(choice.bpp * height * width * float(fps)))}


def degrade_clip(hr: torch.Tensor, cfg: DegradationConfig, seed: int,
                 fps: Fraction = Fraction(24)) -> tuple[torch.Tensor, torch.Tensor]:
    """(gt, lq) for a clip of HR frames (N, 3, H, W) in [0, 1]; lq is (N, 3, H/scale, W/scale)."""
    plan = sample_plan(cfg, seed)
    applier = PlanApplier(plan)
    gt = applier.gt(hr)
    lq = applier.synthetic(gt)
    if plan.codec is not None:
        lq = compress_frames(lq, plan.codec.codec, fps=fps, **codec_settings(plan.codec, *lq.shape[-2:], fps))
    return gt, lq


def streaming_compressor(plan: DegradationPlan, height: int, width: int, fps: Fraction) -> VideoCompressor | None:
    """The compressor `star degrade` feeds chunk by chunk (None when the plan skips compression)."""
    if plan.codec is None:
        return None
    return VideoCompressor(plan.codec.codec, width, height, fps=fps, **codec_settings(plan.codec, height, width, fps))


# ----------------------------------------------------------------------------- `star degrade`

_CHUNK = 16
_PAIR_OPTIONS = EncodeOptions(codec="h264", crf=12)  # near-transparent: the degradation is already in the frames


def read_caption(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read caption: {exc}") from None


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _describe(plan: DegradationPlan) -> str:
    if plan.codec is None:
        return "no codec"
    rate = f"crf {plan.codec.crf}" if plan.codec.crf is not None else f"{plan.codec.bpp:.3f} bpp"
    return f"{plan.codec.codec} {rate}"


def degrade_video(src: Path, gt_dest: Path, lq_dest: Path, cfg: DegradationConfig, seed: int) -> DegradationPlan:
    """Write one (gt, lq) pair, streaming: one plan for the whole video, LQ at 1/scale size."""
    info = probe(src)
    step = 2 * cfg.scale  # keeps both sizes even for 4:2:0
    height, width = info.height - info.height % step, info.width - info.width % step
    if not height or not width:
        raise InputError(f"{src}: {info.width}x{info.height} is too small for scale {cfg.scale}")
    plan = sample_plan(cfg, seed)
    applier = PlanApplier(plan)
    lq_h, lq_w = lr_size(height, width, cfg.scale)
    compressor = streaming_compressor(plan, lq_h, lq_w, info.fps)
    pts: list[int] = []
    with VideoWriter(gt_dest, info, width, height, _PAIR_OPTIONS) as gt_out, \
            VideoWriter(lq_dest, info, lq_w, lq_h, _PAIR_OPTIONS) as lq_out:
        for batch in read_batches(src, _CHUNK):
            hr = torch.from_numpy(batch.frames[:, :height, :width]).permute(0, 3, 1, 2).float() / 255.0
            gt = applier.gt(hr)
            gt_out.write(_to_uint8(gt), batch.pts)
            lq = _to_uint8(applier.synthetic(gt))
            if compressor is None:
                lq_out.write(lq, batch.pts)
            else:
                compressor.feed(lq)
                pts.extend(batch.pts)
        if compressor is not None:
            done = 0
            for frames in compressor.decoded(_CHUNK):
                lq_out.write(frames, pts[done:done + len(frames)])
                done += len(frames)
    return plan


def run_degrade(hr_dir: Path, out_dir: Path, *, preset: str = "heavy", seed: int = 0, overwrite: bool = False,
                console: Console, scale: int | None = None) -> int:
    """`star degrade`: write out_dir/{gt,lq,text} pairs from the HR videos of hr_dir; return pairs written.

    `scale` (the preset's, 4, by default) is how much smaller LQ is than GT. Captions are
    copied from hr_dir/text/<stem>.txt (or hr_dir/<stem>.txt) when present; a video without
    one gets no text file (an empty one would read as a caption), and the run says which.
    A video that cannot be read is reported and skipped, and the run then ends with a
    StarError (exit 1) naming every video left out, as `star upscale` ends a folder; each
    video's degradation is seeded by (seed, file name), so re-running one file reproduces it.
    """
    if preset not in PRESETS:
        raise InputError(f"unknown degradation preset {preset!r}: choose {' or '.join(PRESETS)}")
    cfg = PRESETS[preset]
    if scale is not None:
        if scale < 1:
            raise InputError(f"--scale must be a whole number of at least 1, got {scale}")
        cfg = replace(cfg, scale=scale)
    videos = list_videos(Path(hr_dir))
    stems = [v.stem for v in videos]
    duplicate = next((s for s in stems if stems.count(s) > 1), None)
    if duplicate is not None:
        raise InputError(f"{hr_dir}: two videos share the name {duplicate!r}; the paired layout keys on it")
    out_dir = Path(out_dir)
    dests = {v: (out_dir / "gt" / f"{v.stem}.mp4", out_dir / "lq" / f"{v.stem}.mp4", out_dir / "text" / f"{v.stem}.txt")
             for v in videos}
    existing = next((d for trio in dests.values() for d in trio if d.exists()), None)
    if existing is not None and not overwrite:
        raise InputError(f"{existing} already exists: pass --overwrite to replace it")
    for sub in ("gt", "lq", "text"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    written = 0
    uncaptioned, skipped = [], []
    for src, (gt_dest, lq_dest, text_dest) in dests.items():
        try:
            caption = read_caption(src.parent / "text" / f"{src.stem}.txt") or read_caption(src.with_suffix(".txt"))
            plan = degrade_video(src, gt_dest, lq_dest, cfg, derive_seed(seed, zlib.crc32(src.name.encode())))
        except InputError as error:
            console.print(message(f"{src.name}: {error}", "skipped", "yellow"))
            skipped.append(src.name)
            continue
        if caption:
            with atomic_output(text_dest) as tmp:
                tmp.write_text(caption + "\n", encoding="utf-8")
        else:
            text_dest.unlink(missing_ok=True)  # --overwrite: an old caption must not outlive its video
            uncaptioned.append(src.name)
        written += 1
        console.print(message(f"{src.name} -> gt/{gt_dest.name}, lq/{lq_dest.name} ({_describe(plan)})"))
    if uncaptioned:
        console.print(
            message(
                f"for {len(uncaptioned)} video(s) ({', '.join(uncaptioned)}): no text/ file was written for them, "
                f"so they train with an empty prompt; add {Path(hr_dir) / 'text'}/<name>.txt to caption them",
                "no caption",
                "yellow",
            )
        )
    if skipped:
        raise skipped_videos(skipped, len(videos), written)
    return written

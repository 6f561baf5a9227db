"""Training configuration: plain dataclasses and the checks of their values.

Every field is documented in `configs/train.example.toml`; `train.config_file` reads
one into these classes. Defaults follow the reference training script
(NJU-PCALab/STAR `train_sr.py`) and Real-ESRGAN's degradation options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from star_cli.errors import InputError

KNOWN_CODECS = ("libx264", "mpeg4", "libvpx")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


@dataclass(frozen=True)
class StageConfig:
    """One round of blur -> random resize -> noise -> JPEG (Real-ESRGAN's first stage defaults)."""

    blur_prob: float = 1.0
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    # iso, aniso, generalized_iso, generalized_aniso, plateau_iso, plateau_aniso
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    sinc_prob: float = 0.1
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)


SECOND_STAGE = StageConfig(blur_prob=0.8, blur_sigma=(0.2, 1.5), resize_probs=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
                           noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5))


@dataclass(frozen=True)
class CompressionConfig:
    """Real video compression of the whole low-resolution clip, after the synthetic stages."""

    prob: float = 1.0
    codecs: tuple[str, ...] = KNOWN_CODECS
    codec_probs: tuple[float, ...] = (1.0, 1.0, 1.0)  # relative weights
    crf_prob: float = 0.5  # for libx264/libvpx: constant quality instead of a bitrate
    crf_range: tuple[int, int] = (23, 38)
    bpp_range: tuple[float, float] = (0.03, 0.3)  # bitrate as bits per pixel per frame


@dataclass(frozen=True)
class DegradationConfig:
    """Synthetic LQ from HR: stage 1, optional stage 2, final resize + sinc + JPEG, video codec."""

    preset: str = "heavy"
    scale: int = 4
    sharpen_gt: bool = True  # Real-ESRGAN/STAR train against an unsharp-masked ground truth
    second_stage: bool = True
    final_sinc_prob: float = 0.8
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = SECOND_STAGE
    compression: CompressionConfig = field(default_factory=CompressionConfig)


PRESETS = {
    "heavy": DegradationConfig(),
    "light": DegradationConfig(preset="light", second_stage=False,
                               compression=CompressionConfig(crf_range=(18, 30), bpp_range=(0.1, 0.6))),
}


@dataclass(frozen=True)
class DataConfig:
    root: Path
    source: str = "paired"  # "paired": root/gt, root/lq, root/text; "hr": HR videos in root, degraded on the fly
    num_frames: int = 32
    crop_height: int = 720
    crop_width: int = 1280
    caption_dropout: float = 0.5
    num_workers: int = 0
    degradation: DegradationConfig = field(default_factory=DegradationConfig)


@dataclass(frozen=True)
class ModelConfig:
    weights_dir: Path | None = None
    variant: str = "light"
    init_from: Path | None = None  # None: the variant's STAR weights in weights_dir
    gradient_checkpointing: bool = True


@dataclass(frozen=True)
class LossConfig:
    df_weight: float = 0.01
    beta: float = 1.0
    alpha: float = 2.0
    split: str = "radial"  # or "quantile" (the reference script's soft magnitude mask)
    cutoff: float = 0.25  # radial: fraction of the Nyquist frequency kept as "low"
    quantile: float = 0.8
    sharpness: float = 10.0
    decode_chunk: int = 3


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    eps: float = 1e-8
    use_8bit: bool = False
    max_grad_norm: float = 1.0
    scheduler: str = "constant_with_warmup"
    warmup_steps: int = 500


@dataclass(frozen=True)
class TrainConfig:
    output_dir: Path
    max_steps: int = 50_000
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "fp16"
    seed: int = 0
    ema_decay: float = 0.0  # 0 disables the EMA


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 500
    keep: int = 3  # 0 keeps all


@dataclass(frozen=True)
class LogConfig:
    every: int = 10
    tensorboard: bool = True


@dataclass(frozen=True)
class ValidationConfig:
    clip: Path | None = None
    every: int = 1000
    steps: int = 15
    max_frames: int = 16
    prompt: str = ""


@dataclass(frozen=True)
class Config:
    data: DataConfig
    train: TrainConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise InputError(f"{key} {message}")


def _prob(value: float, key: str) -> None:
    _check(0.0 <= value <= 1.0, key, f"must be in [0, 1] (got {value})")


def _range(value: tuple[float, float], key: str, low: float = 0.0) -> None:
    _check(low <= value[0] <= value[1], key, f"must be [min, max] with {low} <= min <= max (got {list(value)})")


def _weights(value: tuple[float, ...], count: int, key: str) -> None:
    _check(len(value) == count, key, f"must have {count} values (got {len(value)})")
    _check(all(v >= 0 for v in value) and sum(value) > 0, key, "must be non-negative with a positive sum")


def _validate_stage(stage: StageConfig, key: str) -> None:
    _prob(stage.blur_prob, f"{key}.blur_prob")
    _check(all(k % 2 == 1 and 3 <= k <= 21 for k in stage.kernel_sizes), f"{key}.kernel_sizes",
           f"must be odd sizes between 3 and 21 (got {list(stage.kernel_sizes)})")
    _weights(stage.kernel_probs, 6, f"{key}.kernel_probs")
    _check(stage.blur_sigma[0] > 0, f"{key}.blur_sigma", "must be positive")
    _range(stage.blur_sigma, f"{key}.blur_sigma")
    _check(stage.betag_range[0] <= 1.0 <= stage.betag_range[1] and stage.betag_range[0] > 0, f"{key}.betag_range",
           f"must satisfy 0 < min <= 1 <= max (got {list(stage.betag_range)})")
    _check(stage.betap_range[0] <= 1.0 <= stage.betap_range[1] and stage.betap_range[0] > 0, f"{key}.betap_range",
           f"must satisfy 0 < min <= 1 <= max (got {list(stage.betap_range)})")
    _prob(stage.sinc_prob, f"{key}.sinc_prob")
    _weights(stage.resize_probs, 3, f"{key}.resize_probs")
    _check(0 < stage.resize_range[0] <= 1.0 <= stage.resize_range[1], f"{key}.resize_range",
           f"must satisfy 0 < min <= 1 <= max (got {list(stage.resize_range)})")
    _prob(stage.gaussian_noise_prob, f"{key}.gaussian_noise_prob")
    _range(stage.noise_range, f"{key}.noise_range")
    _range(stage.poisson_scale_range, f"{key}.poisson_scale_range")
    _prob(stage.gray_noise_prob, f"{key}.gray_noise_prob")
    _range(stage.jpeg_range, f"{key}.jpeg_range", low=1.0)
    _check(stage.jpeg_range[1] <= 100, f"{key}.jpeg_range", "must be within [1, 100]")


def _validate_degradation(deg: DegradationConfig, key: str) -> None:
    _check(deg.scale >= 1, f"{key}.scale", f"must be >= 1 (got {deg.scale})")
    _prob(deg.final_sinc_prob, f"{key}.final_sinc_prob")
    _validate_stage(deg.stage1, f"{key}.stage1")
    _validate_stage(deg.stage2, f"{key}.stage2")
    comp, ckey = deg.compression, f"{key}.compression"
    _prob(comp.prob, f"{ckey}.prob")
    unknown = [c for c in comp.codecs if c not in KNOWN_CODECS]
    _check(not unknown, f"{ckey}.codecs", f"has unknown codec {unknown[0] if unknown else ''!r}; "
           f"choose from {', '.join(KNOWN_CODECS)}")
    _weights(comp.codec_probs, len(comp.codecs), f"{ckey}.codec_probs")
    _prob(comp.crf_prob, f"{ckey}.crf_prob")
    _check(0 <= comp.crf_range[0] <= comp.crf_range[1] <= 51, f"{ckey}.crf_range",
           f"must be [min, max] within 0..51 (got {list(comp.crf_range)})")
    _check(comp.bpp_range[0] > 0, f"{ckey}.bpp_range", "must be positive")
    _range(comp.bpp_range, f"{ckey}.bpp_range")


def validate(config: Config) -> None:
    """Refuse the first value out of its range as one InputError line naming its dotted key."""
    data = config.data
    _check(data.source in ("paired", "hr"), "data.source", f"must be 'paired' or 'hr' (got {data.source!r})")
    _check(data.num_frames >= 1, "data.num_frames", f"must be >= 1 (got {data.num_frames})")
    for name in ("crop_height", "crop_width"):
        size = getattr(data, name)
        _check(size >= 8 and size % 8 == 0, f"data.{name}", f"must be a positive multiple of 8 (got {size})")
        if data.source == "hr":
            _check(size % data.degradation.scale == 0, f"data.{name}",
                   f"must be a multiple of data.degradation.scale={data.degradation.scale} (got {size})")
    _prob(data.caption_dropout, "data.caption_dropout")
    _check(data.num_workers >= 0, "data.num_workers", f"must be >= 0 (got {data.num_workers})")
    _validate_degradation(data.degradation, "data.degradation")

    output_dir = config.train.output_dir
    _check(not output_dir.exists() or output_dir.is_dir(), "train.output_dir", f"is a file, not a folder: {output_dir}")

    _check(config.model.variant in ("light", "heavy"), "model.variant",
           f"must be 'light' or 'heavy' (got {config.model.variant!r})")

    loss = config.loss
    _check(loss.df_weight >= 0, "loss.df_weight", f"must be >= 0 (got {loss.df_weight})")
    _check(loss.beta >= 0, "loss.beta", f"must be >= 0 (got {loss.beta})")
    _check(loss.alpha >= 0, "loss.alpha", f"must be >= 0 (got {loss.alpha})")
    _check(loss.split in ("radial", "quantile"), "loss.split", f"must be 'radial' or 'quantile' (got {loss.split!r})")
    _check(0 < loss.cutoff <= 1, "loss.cutoff", f"must be in (0, 1] (got {loss.cutoff})")
    _check(0 < loss.quantile < 1, "loss.quantile", f"must be in (0, 1) (got {loss.quantile})")
    _check(loss.sharpness > 0, "loss.sharpness", f"must be > 0 (got {loss.sharpness})")
    _check(loss.decode_chunk >= 1, "loss.decode_chunk", f"must be >= 1 (got {loss.decode_chunk})")

    opt = config.optim
    _check(opt.lr > 0, "optim.lr", f"must be > 0 (got {opt.lr})")
    _check(all(0 <= b < 1 for b in opt.betas), "optim.betas", f"must be in [0, 1) (got {list(opt.betas)})")
    _check(opt.weight_decay >= 0, "optim.weight_decay", f"must be >= 0 (got {opt.weight_decay})")
    _check(opt.eps > 0, "optim.eps", f"must be > 0 (got {opt.eps})")
    _check(opt.max_grad_norm > 0, "optim.max_grad_norm", f"must be > 0 (got {opt.max_grad_norm})")
    _check(opt.scheduler in SCHEDULERS, "optim.scheduler",
           f"must be one of {', '.join(SCHEDULERS)} (got {opt.scheduler!r})")
    _check(opt.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0 (got {opt.warmup_steps})")

    train = config.train
    for name in ("max_steps", "batch_size", "gradient_accumulation_steps"):
        _check(getattr(train, name) >= 1, f"train.{name}", f"must be >= 1 (got {getattr(train, name)})")
    _check(train.mixed_precision in ("no", "fp16", "bf16"), "train.mixed_precision",
           f"must be 'no', 'fp16' or 'bf16' (got {train.mixed_precision!r})")
    _check(train.seed >= 0, "train.seed", f"must be >= 0 (got {train.seed})")
    _check(0 <= train.ema_decay < 1, "train.ema_decay", f"must be in [0, 1) (got {train.ema_decay})")

    _check(config.checkpoint.every >= 1, "checkpoint.every", f"must be >= 1 (got {config.checkpoint.every})")
    _check(config.checkpoint.keep >= 0, "checkpoint.keep", f"must be >= 0 (got {config.checkpoint.keep})")
    _check(config.log.every >= 1, "log.every", f"must be >= 1 (got {config.log.every})")
    val = config.validation
    for name in ("every", "steps", "max_frames"):
        _check(getattr(val, name) >= 1, f"validation.{name}", f"must be >= 1 (got {getattr(val, name)})")

"""The validation clip of `star train`: restored with the current weights every N steps, written as video.

It samples with the shared `diffusion.window.sample_window` on one region covering the
training canvas, with the EMA weights swapped in when an EMA is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from star_cli.diffusion.tiled import grid_regions
from star_cli.diffusion.window import SamplerSettings, sample_window
from star_cli.models.text import TextEncoder
from star_cli.models.vae import to_uint8
from star_cli.train.config import Config
from star_cli.train.data import read_crop
from star_cli.train.rundir import VALIDATION
from star_cli.video.probe import VideoInfo, probe
from star_cli.video.writer import EncodeOptions, VideoWriter


@dataclass(frozen=True)
class ValidationClip:
    """The validation LQ clip at the training canvas, and the prompt's contexts."""

    info: VideoInfo
    frames: torch.Tensor  # (F, 3, crop_h, crop_w) in [-1, 1]
    pts: list[int]
    context: torch.Tensor
    negative: torch.Tensor


def validation_clip(cfg: Config, text: TextEncoder) -> ValidationClip:
    """First frames of the validation clip, scaled to cover the training crop and centre-cropped."""
    path = cfg.validation.clip
    info = probe(path)
    count = min(cfg.validation.max_frames, info.num_frames)
    frames = torch.from_numpy(read_crop(path, 0, count, (0, 0, info.height, info.width))).permute(0, 3, 1, 2).float()
    ch, cw = cfg.data.crop_height, cfg.data.crop_width
    cover = max(ch / info.height, cw / info.width)
    size = (max(ch, round(info.height * cover)), max(cw, round(info.width * cover)))
    frames = F.interpolate(frames / 255.0, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    top, left = (size[0] - ch) // 2, (size[1] - cw) // 2
    frames = frames[:, :, top:top + ch, left:left + cw] * 2 - 1
    step = round(1 / (info.fps * info.time_base))
    positive, negative = text.contexts(cfg.validation.prompt)
    return ValidationClip(info, frames, [info.start_pts + i * step for i in range(count)], positive.cpu(), negative.cpu())


class TrainingState(Protocol):
    """What validation reads of a training session (train.loop.Session has it; no import back to the loop)."""

    accelerator: Any
    cfg: Config
    model: torch.nn.Module
    ema: Any
    params: list[torch.nn.Parameter]
    vae: Any
    weight_dtype: torch.dtype
    validation: ValidationClip | None


def write_validation(s: TrainingState, step: int) -> Path:
    """Restore the validation clip with the current (EMA) weights and write it as a video."""
    acc, clip, cfg = s.accelerator, s.validation, s.cfg
    device = acc.device
    model = acc.unwrap_model(s.model)
    if s.ema is not None:
        s.ema.store(s.params)
        s.ema.copy_to(s.params)
    model.eval()
    try:
        with torch.no_grad():
            hint = s.vae.encode_videos(clip.frames.transpose(0, 1)[None].to(device, s.weight_dtype),
                                       torch.Generator(device=device).manual_seed(cfg.train.seed))
            size = tuple(hint.shape[2:])
            regions = grid_regions([(0, size[0])], [(0, size[1])], [(0, size[2])], size)

            def denoise(x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
                with acc.autocast():
                    return model(x_t, t, y, h)

            latents = sample_window(denoise, hint, clip.context.to(device), clip.negative.to(device), regions,
                                    SamplerSettings(mode="normal", steps=cfg.validation.steps), seed=cfg.train.seed)
            frames = s.vae.decode(latents[0].transpose(0, 1))
    finally:
        model.train()
        if s.ema is not None:
            s.ema.restore(s.params)
    pixels = to_uint8(frames)
    dest = cfg.train.output_dir / VALIDATION / f"step-{step:08d}.mp4"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(dest, clip.info, pixels.shape[2], pixels.shape[1], EncodeOptions(crf=18)) as writer:
        writer.write(np.ascontiguousarray(pixels), clip.pts)
    return dest

"""The STAR engine: one plan window of LR frames in, restored frames out.

Stage by stage, as the reference does it: frames -> [-1, 1] -> bilinear resize to
the target size -> canvas padding -> VAE encode (per frame, seeded posterior
sample) -> LR latent noised to t_max and denoised chunk x tile by chunk x tile at
every step -> temporal VAE decode in groups (tiled when large) -> crop -> colour fix
against the LR frames -> uint8. Everything random is drawn from (seed, window
start), so windows are independent and a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from star_cli.diffusion.noise import derive_seed
from star_cli.diffusion.tiled import Region
from star_cli.diffusion.samplers import StepCallback
from star_cli.diffusion.window import SamplerSettings, sample_window
from star_cli.errors import StarError
from star_cli.hub.layout import WeightsPaths
from star_cli.hub.layout import STAR_VARIANTS
from star_cli.models import STARUNet
from star_cli.models.loading import load_star_unet
from star_cli.models.text import TextEncoder
from star_cli.models.vae import VideoVAE, to_uint8, to_vae_range
from star_cli.pipeline.colorfix import apply_color_fix
from star_cli.pipeline.engines.placement import Placement, resolve_device, resolve_dtype
from star_cli.pipeline.engines.speedups import (
    attention_backend,
    attention_warning,
    batch_guidance,
    compile_repeated_blocks,
    usable_device_bytes,
)
from star_cli.pipeline.plan import Padding, Plan, Window
from star_cli.pipeline.request import StarSettings, solver_mode
from star_cli.terminal import message

FEED_FORWARD_CHUNK = 32768
"""Tokens per GEGLU feed-forward slice. The top-level feed-forward is the UNet's largest
activation; slicing it (same result) cut the measured fp16 peak of a 32x74x120 tile from
6.2 to 3.1 GiB (benchmarks/vram_estimate.py); smaller slices gain nothing more."""

VAE_POSTERIOR_STREAM = 2
"""Random stream of the VAE posterior samples (the sampler draws streams 0 and 1 of each window)."""


def pad_canvas(frames: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Pad (N, 3, H, W) frames to the plan's canvas (white like the reference, or edge replication)."""
    pad = padding.torch_pad
    if not any(pad):
        return frames
    if padding.mode == "constant":
        return F.pad(frames, pad, mode="constant", value=padding.value)
    return F.pad(frames, pad, mode="replicate")


def window_regions(plan: Plan, window: Window) -> list[Region]:
    """Every chunk x tile of `window` (frames relative to it), with the plan's separable join weights."""
    return [
        Region.separable(
            (chunk.start - window.start, chunk.end - window.start),
            (tile.top, tile.top + tile.height),
            (tile.left, tile.left + tile.width),
            (chunk.weights, tile.row_weights, tile.col_weights),
        )
        for chunk in window.chunks
        for tile in plan.tiles
    ]


@dataclass
class StarEngine:
    """Loaded STAR components plus the settings of the run."""

    unet: STARUNet
    vae: VideoVAE
    context: torch.Tensor
    negative_context: torch.Tensor
    settings: StarSettings
    placement: Placement
    dtype: torch.dtype
    name: str = "star"
    temporal: bool = True

    @classmethod
    def load(cls, settings: StarSettings, weights: WeightsPaths, *, console: Console, quiet: bool = False) -> StarEngine:
        """Load every component from the checked `weights` folder and encode the prompts once."""
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        custom = settings.checkpoint not in STAR_VARIANTS
        checkpoint = Path(settings.checkpoint).expanduser() if custom else weights.star
        if not checkpoint.is_file():
            raise StarError(f"checkpoint not found: {checkpoint} (give light, heavy or a .safetensors/.pt file)")
        placement = Placement(device, settings.offload)
        if not quiet:
            console.print(message(f"loading STAR ({checkpoint.name}) on {device} in {str(dtype).removeprefix('torch.')}"))
        text = TextEncoder.from_dirs(weights.text_encoder_dir, weights.tokenizer_dir, dtype=dtype)
        placement.place("text", text.model)
        context, negative = text.contexts(settings.prompt)
        del text
        vae = VideoVAE.from_dir(weights.vae_dir, dtype=dtype)
        placement.place("vae", vae.model)
        unet = load_star_unet(checkpoint, dtype=dtype, device="cpu")
        unet.set_feed_forward_chunk(FEED_FORWARD_CHUNK)
        unet = placement.place("unet", unet, streamable=True)
        engine = cls(unet, vae, context.to(device), negative.to(device), settings, placement, dtype)
        engine.prepare(console, quiet=quiet)
        return engine

    def prepare(self, console: Console, *, quiet: bool = False) -> None:
        """Compile if asked, and name the attention kernel (with a warning when it is the slow one)."""
        if self.settings.compile:
            compile_repeated_blocks(self.unet)
        config = self.unet.config
        backend = attention_backend(self.device, self.dtype, config.num_heads, config.head_dim)
        warning = attention_warning(backend, self.device, self.dtype)
        if quiet:
            return
        if warning:
            console.print(f"[yellow]warning:[/] {warning}")
        console.print(f"attention kernel: {backend}; compile: {'on' if self.settings.compile else 'off'}")

    @property
    def device(self) -> torch.device:
        return self.placement.device

    def sampler_settings(self) -> SamplerSettings:
        steps = self.settings.steps
        return SamplerSettings(solver=self.settings.solver, mode=solver_mode(steps), steps=steps, guide_scale=self.settings.guidance)

    def batches_guidance(self, plan: Plan) -> bool:
        """Whether this plan's guidance passes run as one batch of 2 (see `speedups.batch_guidance`)."""
        params = sum(p.numel() for p in self.unet.parameters()) + sum(p.numel() for p in self.vae.model.parameters())
        return batch_guidance(
            self.settings.batch_guidance,
            plan,
            usable_bytes=usable_device_bytes(self.device),
            dtype_bytes=self.dtype.itemsize,
            offload=self.placement.offload,
            vae_group=self.settings.vae_group,
            model_params=params,
        )

    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            v = self.unet(x_t.to(self.device, self.dtype), t.to(self.device), context.to(self.dtype), hint=hint.to(self.device, self.dtype))
        return v.float()

    def _resized(self, frames: np.ndarray, plan: Plan) -> torch.Tensor:
        """The LR frames in [-1, 1], bilinearly resized to the output size (float32, on the device)."""
        return F.interpolate(to_vae_range(frames, self.device), size=plan.output_size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def encode(self, frames: np.ndarray, plan: Plan, window: Window) -> torch.Tensor:
        """LR latents (1, 4, F, h, w) of the window, frame by frame, the posterior sampled from (seed, window)."""
        self.placement.activate("vae")
        generator = torch.Generator("cpu").manual_seed(derive_seed(self.settings.seed, window.start, VAE_POSTERIOR_STREAM))
        latents = [
            self.vae.encode(pad_canvas(self._resized(frames[i : i + 1], plan), plan.canvas.padding), generator)
            for i in range(len(frames))
        ]
        return torch.cat(latents).float().permute(1, 0, 2, 3).unsqueeze(0)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, frames: np.ndarray, plan: Plan) -> np.ndarray:
        """Decode (1, 4, F, h, w) latents group by group, crop the canvas, colour-fix, to uint8."""
        self.placement.activate("vae")
        out_h, out_w = plan.output_size
        top, left = plan.canvas.padding.top, plan.canvas.padding.left
        restored = np.empty((len(frames), out_h, out_w, 3), dtype=np.uint8)
        done = 0
        for pixels in self.vae.iter_decode(latents[0].permute(1, 0, 2, 3), group=self.settings.vae_group):
            if not torch.isfinite(pixels).all():
                raise StarError("the VAE decode produced NaN/inf values; try --dtype bf16 or --dtype fp32")
            pixels = pixels[:, :, top : top + out_h, left : left + out_w].float()
            count = len(pixels)
            reference = to_vae_range(frames[done : done + count], pixels.device)
            restored[done : done + count] = to_uint8(apply_color_fix(self.settings.color_fix, pixels, reference))
            done += count
        return restored

    def restore(self, frames: np.ndarray, plan: Plan, window: Window | None = None) -> np.ndarray:
        """Restore one window of uint8 LR frames to uint8 frames at the plan's output size."""
        if window is None:
            raise ValueError("the STAR engine restores plan windows")
        hint = self.encode(frames, plan, window)
        latents = self.sample(hint, plan, window)
        return self.decode(latents, frames, plan)

    def sample(self, hint: torch.Tensor, plan: Plan, window: Window, callback: StepCallback | None = None) -> torch.Tensor:
        """Denoise one window's LR latents (1, 4, F, h, w) chunk x tile by chunk x tile; float32 latents."""
        self.placement.activate("unet")
        settings = replace(self.sampler_settings(), batch_guidance=self.batches_guidance(plan))
        return sample_window(
            self._denoise,
            hint,
            self.context,
            self.negative_context,
            window_regions(plan, window),
            settings,
            seed=self.settings.seed,
            window=window.start,
            callback=callback,
        )

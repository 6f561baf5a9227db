"""The STAR engine: one plan window of LR frames in, restored frames out.

Stage by stage, as the reference does it: frames -> [-1, 1] -> bilinear resize to
the target size -> canvas padding -> VAE encode (per frame, seeded posterior
sample) -> LR latent noised to t_max and denoised chunk x tile by chunk x tile at
every step -> temporal VAE decode in groups (tiled when large) -> crop -> colour fix
against the LR frames -> uint8. Everything random is drawn from (seed, window
start), so windows are independent and a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from star_cli.diffusion.noise import derive_seed
from star_cli.diffusion.tiled import Region
from star_cli.diffusion.window import SamplerSettings, sample_window
from star_cli.errors import InputError, StarError
from star_cli.hub import WeightsPaths
from star_cli.hub.layout import STAR_VARIANTS
from star_cli.models import STARUNet
from star_cli.models.loading import load_star_unet
from star_cli.models.text import TextEncoder
from star_cli.models.vae import VideoVAE, to_uint8, to_vae_range
from star_cli.pipeline.colorfix import apply_color_fix
from star_cli.pipeline.engines.placement import Placement, resolve_device, resolve_dtype
from star_cli.pipeline.events import Notice, ProgressCallback, ignore
from star_cli.pipeline.plan import Padding, Plan, Window
from star_cli.pipeline.request import StarSettings, solver_mode
from star_cli.pipeline.timing import StageClock

FEED_FORWARD_CHUNK = 32768
"""Tokens per GEGLU feed-forward slice. The top-level feed-forward is the UNet's largest
activation; slicing it (same result) cut the measured fp16 peak of a 32x74x120 tile from
6.2 to 3.1 GiB (benchmarks/vram_estimate.py); smaller slices gain nothing more."""

VAE_POSTERIOR_STREAM = 2
"""Random stream of the VAE posterior samples (the sampler draws streams 0 and 1 of each window)."""

LOAD_TIME_SETTINGS = ("checkpoint", "weights_dir", "device", "dtype", "offload")
"""Settings fixed when the models load; the others may change from one call to the next."""


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


def encode_prompts(weights: WeightsPaths, prompt: str, dtype: torch.dtype, placement: Placement) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, negative context) of `prompt`; the text encoder is freed again before this returns."""
    text = TextEncoder.from_dirs(weights.text_encoder_dir, weights.tokenizer_dir, dtype=dtype)
    placement.place("text", text.model)
    context, negative = text.contexts(prompt)
    return context.to(placement.device), negative.to(placement.device)


def _sync(device: torch.device) -> Callable[[], None] | None:
    """What makes a stage's timing include its queued GPU work."""
    return torch.cuda.synchronize if device.type == "cuda" else None


@dataclass
class StarEngine:
    """Loaded STAR components plus the settings of the run.

    `clock` times the stages of each window; `on_evaluations(n)` is called after
    every UNet call with the model evaluations it made (chunk x tile x step x branch),
    so progress can move inside a window.
    """

    unet: STARUNet
    vae: VideoVAE
    context: torch.Tensor
    negative_context: torch.Tensor
    settings: StarSettings
    placement: Placement
    dtype: torch.dtype
    weights: WeightsPaths | None = None
    clock: StageClock = field(default_factory=StageClock)
    on_evaluations: Callable[[int], None] | None = None
    name: str = "star"
    temporal: bool = True

    @classmethod
    def load(cls, settings: StarSettings, weights: WeightsPaths, *, progress: ProgressCallback = ignore) -> StarEngine:
        """Load every component from the checked `weights` folder and encode the prompts once."""
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        custom = settings.checkpoint not in STAR_VARIANTS
        checkpoint = Path(settings.checkpoint).expanduser() if custom else weights.star
        if not checkpoint.is_file():
            raise StarError(f"checkpoint not found: {checkpoint} (give light, heavy or a .safetensors/.pt file)")
        placement = Placement(device, settings.offload)
        clock = StageClock(_sync(device))
        progress(Notice(f"loading STAR ({checkpoint.name}) on {device} in {str(dtype).removeprefix('torch.')}"))
        with clock.stage("text"):
            context, negative = encode_prompts(weights, settings.prompt, dtype, placement)
        vae = VideoVAE.from_dir(weights.vae_dir, dtype=dtype)
        placement.place("vae", vae.model)
        unet = load_star_unet(checkpoint, dtype=dtype, device="cpu")
        unet.set_feed_forward_chunk(FEED_FORWARD_CHUNK)
        unet = placement.place("unet", unet, streamable=True)
        return cls(unet, vae, context, negative, settings, placement, dtype, weights, clock)

    def with_settings(self, settings: StarSettings) -> StarEngine:
        """This engine (same loaded models) for other per-call settings; a new prompt is encoded here."""
        changed = [name for name in LOAD_TIME_SETTINGS if getattr(settings, name) != getattr(self.settings, name)]
        if changed:
            raise InputError(f"{', '.join(changed)} are fixed when the pipeline loads; load another pipeline to change them")
        engine = replace(self, settings=settings, clock=StageClock(self.clock.sync), on_evaluations=None)
        if settings.prompt != self.settings.prompt:
            if self.weights is None:
                raise InputError("this engine was built without its weights folder, so its prompt cannot change")
            with engine.clock.stage("text"):
                engine.context, engine.negative_context = encode_prompts(self.weights, settings.prompt, self.dtype, self.placement)
        return engine

    @property
    def device(self) -> torch.device:
        return self.placement.device

    def sampler_settings(self) -> SamplerSettings:
        steps = self.settings.steps
        return SamplerSettings(solver=self.settings.solver, mode=solver_mode(steps), steps=steps, guide_scale=self.settings.guidance)

    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            v = self.unet(x_t.to(self.device, self.dtype), t.to(self.device), context.to(self.dtype), hint=hint.to(self.device, self.dtype))
        if self.on_evaluations is not None:
            self.on_evaluations(len(x_t))  # a batched-guidance call is two evaluations
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
        with self.clock.stage("vae_encode"):
            hint = self.encode(frames, plan, window)
        with self.clock.stage("sampling"):
            self.placement.activate("unet")
            latents = sample_window(
                self._denoise,
                hint,
                self.context,
                self.negative_context,
                window_regions(plan, window),
                self.sampler_settings(),
                seed=self.settings.seed,
                window=window.start,
            )
        with self.clock.stage("vae_decode"):
            return self.decode(latents, frames, plan)

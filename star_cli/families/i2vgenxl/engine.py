"""The STAR engine: one plan window of LR frames in, restored frames out.

Stage by stage, as the reference does it: frames -> [-1, 1] -> bilinear resize to
the target size -> canvas padding -> VAE encode (per frame, float32, sampled
posterior) -> LR latent noised to t_max and denoised chunk x tile by chunk x tile at
every step -> temporal VAE decode in groups (in the run's dtype) -> crop -> colour
fix against the LR frames -> uint8. Everything random comes from one `NoiseSource`
per window, by default seeded from (seed, window start), so windows are independent
and a resumed run repeats an uninterrupted one; tests/test_reference_pipeline.py
replays the reference's recorded draws through the same code.

Precision, as the reference: the text encoder runs once in float32 and is freed
before sampling; the VAE keeps float32 weights, encodes in float32 and decodes under
autocast in the run's dtype (float16 on CUDA by default); the UNet runs in the run's
dtype; the solver's arithmetic is float32. VAE and UNet tiles come from the plan
(whole frames unless memory forced tiles: star_cli.pipeline.tiling).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from star_cli.diffusion.noise import NoiseSource, SeededNoise
from star_cli.diffusion.tiled import Region
from star_cli.diffusion.samplers import StepCallback
from star_cli.diffusion.window import SamplerSettings, sample_window
from star_cli.errors import StarError
from star_cli.families.base import engine_for_call
from star_cli.hub.layout import WeightsPaths
from star_cli.hub.layout import STAR_VARIANTS
from star_cli.models import STARUNet
from star_cli.models.loading import load_star_unet
from star_cli.models.text import TextEncoder
from star_cli.models.vae import VideoVAE, to_uint8, to_vae_range
from star_cli.pipeline.colorfix import apply_color_fix
from star_cli.pipeline.engines.compiling import (
    auto_compile,
    compile_choice,
    compile_failed,
    compile_repeated_blocks,
    eager_on_compile_error,
    is_compiled,
    refuse_uncompilable,
)
from star_cli.pipeline.engines.placement import Placement, resolve_device, resolve_dtype
from star_cli.pipeline.engines.speedups import (
    attention_backend,
    attention_priority,
    attention_warning,
    batch_guidance,
    usable_device_bytes,
)
from star_cli.pipeline.plan import Padding, Plan, Window
from star_cli.pipeline.events import Notice, ProgressCallback, ignore
from star_cli.pipeline.request import StarSettings, solver_mode
from star_cli.pipeline.timing import StageClock

FEED_FORWARD_CHUNK = 32768
"""Tokens per GEGLU feed-forward slice. The top-level feed-forward is the UNet's largest
activation; slicing it (same result) cut the measured fp16 peak of a 32x74x120 tile from
6.2 to 3.1 GiB (benchmarks/vram_estimate.py); smaller slices gain nothing more."""


def pad_canvas(frames: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Pad (N, 3, H, W) frames to the plan's canvas (white like the reference, or edge replication)."""
    pad = padding.torch_pad
    if not any(pad):
        return frames
    if padding.mode == "constant":
        return F.pad(frames, pad, mode="constant", value=padding.value)
    return F.pad(frames, pad, mode="replicate")


def resize_frames(frames: torch.Tensor, plan: Plan) -> torch.Tensor:
    """(N, 3, h, w) frames bilinearly resized to the plan's output size (the reference's F.interpolate)."""
    return F.interpolate(frames, size=plan.output_size, mode="bilinear", align_corners=False)


def finish_frames(canvas: torch.Tensor, frames: np.ndarray, plan: Plan, color_fix: str) -> torch.Tensor:
    """Decoded canvas frames (g, 3, H, W) -> the picture cropped out and colour-fixed against its LR `frames`."""
    out_h, out_w = plan.output_size
    top, left = plan.canvas.padding.top, plan.canvas.padding.left
    pixels = canvas[:, :, top : top + out_h, left : left + out_w]
    return apply_color_fix(color_fix, pixels, to_vae_range(frames, pixels.device))


def _encode_prompts(weights: WeightsPaths, prompt: str, placement: Placement) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) float32 contexts from the float32 text encoder, which is freed before returning.

    The text runs once per prompt, so float32 costs nothing that matters and matches the
    reference (fp16 moved the tiny fixture tower's context by 6.5e-3).
    """
    text = TextEncoder.from_dirs(weights.text_encoder_dir, weights.tokenizer_dir, dtype=torch.float32)
    placement.place("text", text.model)
    context, negative = text.contexts(prompt)
    placement.release("text")
    del text
    gc.collect()
    if placement.device.type == "cuda":
        torch.cuda.empty_cache()
    return context, negative


def _sync(device: torch.device) -> Callable[[], None] | None:
    """What makes a stage's timing include its queued GPU work."""
    return torch.cuda.synchronize if device.type == "cuda" else None


def uses_device_forms(device: torch.device, offload: str) -> bool:
    """Whether the UNet runs `models.device_forms`: on CUDA, where they were measured faster, unless
    offloaded module by module (they read the layers' weights directly, which sequential offload
    only brings to the device inside each layer's own forward)."""
    return device.type == "cuda" and offload != "sequential"


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
    notices: ProgressCallback = ignore  # where a warning met mid-run goes (the run's progress, from `expect`)
    name: str = "star"
    temporal: bool = True

    @classmethod
    def load(cls, settings: StarSettings, weights: WeightsPaths, *, progress: ProgressCallback = ignore) -> StarEngine:
        """Load every component from the checked `weights` folder and encode the prompts once."""
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        if settings.compile:  # the Python API loads without `prepare`, which checks it for the CLI
            refuse_uncompilable(device)
        custom = settings.checkpoint not in STAR_VARIANTS
        checkpoint = Path(settings.checkpoint).expanduser() if custom else weights.star
        if not checkpoint.is_file():
            raise StarError(f"checkpoint not found: {checkpoint} (give light, heavy or a .safetensors/.pt file)")
        placement = Placement(device, settings.offload)
        clock = StageClock(_sync(device))
        progress(Notice(f"loading STAR ({checkpoint.name}) on {device} in {str(dtype).removeprefix('torch.')}"))
        with clock.stage("text"):
            context, negative = _encode_prompts(weights, settings.prompt, placement)
        vae = VideoVAE.from_dir(weights.vae_dir, dtype=torch.float32, decode_dtype=dtype)
        placement.place("vae", vae.model)
        unet = load_star_unet(checkpoint, dtype=dtype, device="cpu")
        unet.set_feed_forward_chunk(FEED_FORWARD_CHUNK)
        unet = placement.place("unet", unet, streamable=True)
        engine = cls(unet, vae, context.to(device), negative.to(device), settings, placement, dtype, weights, clock)
        engine.prepare(progress)
        return engine

    def prepare(self, progress: ProgressCallback = ignore) -> None:
        """Pick the kernels, compile if asked, name the attention kernel (warning when it is the slow one)."""
        self.unet.set_device_forms(uses_device_forms(self.device, self.placement.offload))
        if self.settings.compile:
            compile_repeated_blocks(self.unet)
        config = self.unet.config
        backend = attention_backend(self.device, self.dtype, config.num_heads, config.head_dim)
        warning = attention_warning(backend, self.device, self.dtype)
        if warning:
            progress(Notice(warning, "warning"))
        progress(Notice(f"attention kernel: {backend}; {self._compile_text()}"))

    def _compile_text(self) -> str:
        if self.settings.compile is None and self.device.type == "cuda":
            return "compile: auto (decided from the run's length)"
        return str(compile_choice(self.settings.compile, (), self.device))

    def expect(self, plans: Sequence[Plan], *, share: float = 1.0, progress: ProgressCallback = ignore) -> None:
        """Told a run's plans before its first window (`share`: the part this process takes).

        Under `--compile` auto on CUDA, the UNet's blocks are compiled here when the run's
        sampling repays it (`compiling.auto_compile`); once compiled they stay compiled. No
        plans (a stream of unknown length) leaves them as they are. Warnings met later in the
        run go to `progress`.
        """
        self.notices = progress
        if not plans or self.settings.compile is not None or is_compiled(self.unet) or compile_failed(self.unet):
            return
        choice = auto_compile(plans, self.device, share=share, offload=self.placement.offload)
        if choice.on:
            compile_repeated_blocks(self.unet)
        if self.device.type == "cuda":  # elsewhere auto is always off, as the load line said
            progress(Notice(str(choice)))

    def with_settings(self, settings: StarSettings) -> StarEngine:
        """This engine (same loaded models) for other per-call settings; a new prompt is encoded here."""
        def encode(engine: StarEngine) -> None:
            context, negative = _encode_prompts(engine.weights, settings.prompt, engine.placement)
            engine.context, engine.negative_context = context.to(engine.device), negative.to(engine.device)

        return engine_for_call(self, settings, encode)

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

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        """The UNet's v-prediction (float32) for float32 inputs: the sampler's `Denoiser`."""
        def forward() -> torch.Tensor:
            return self.unet(x_t.to(self.device, self.dtype), t.to(self.device), context.to(self.dtype), hint=hint.to(self.device, self.dtype))

        with torch.no_grad(), attention_priority(self.device):
            v = eager_on_compile_error(self.unet, forward, lambda text: self.notices(Notice(text, "warning")))
        if self.on_evaluations is not None:
            self.on_evaluations(len(x_t))  # a batched-guidance call is two evaluations
        return v.float()

    def _lr_frames(self, frames: np.ndarray, plan: Plan) -> torch.Tensor:
        """The LR frames in [-1, 1], bilinearly resized to the output size (float32, on the device)."""
        return resize_frames(to_vae_range(frames, self.device), plan)

    @torch.no_grad()
    def encode(self, frames: np.ndarray, plan: Plan, noise: NoiseSource) -> torch.Tensor:
        """LR latents (1, 4, F, h, w) of a window, frame by frame, each posterior sampled with `noise`."""
        self.placement.activate("vae")
        canvas = (pad_canvas(self._lr_frames(frames[i : i + 1], plan), plan.canvas.padding) for i in range(len(frames)))
        with attention_priority(self.device):
            latents = [
                self.vae.encode(frame, noise=lambda _, mean, k=k: noise.posterior(k, mean), tile=plan.options.vae_encode_tile)
                for k, frame in enumerate(canvas)
            ]
        return torch.cat(latents).float().permute(1, 0, 2, 3).unsqueeze(0).contiguous()

    @torch.no_grad()
    def iter_decode(self, latents: torch.Tensor, frames: np.ndarray, plan: Plan) -> Iterator[torch.Tensor]:
        """Decode (1, 4, F, h, w) latents group by group: colour-fixed float32 frames (g, 3, H, W) in [-1, 1]."""
        self.placement.activate("vae")
        done = 0
        groups = self.vae.iter_decode(latents[0].permute(1, 0, 2, 3), group=self.settings.vae_group, tile=plan.options.vae_tile)
        while True:
            with attention_priority(self.device):  # not held across the yield: the caller's work keeps its order
                pixels = next(groups, None)
            if pixels is None:
                break
            if not torch.isfinite(pixels).all():
                raise StarError("the VAE decode produced NaN/inf values; try --dtype bf16 or --dtype fp32")
            count = len(pixels)
            yield finish_frames(pixels, frames[done : done + count], plan, self.settings.color_fix)
            done += count

    def sample(
        self, hint: torch.Tensor, plan: Plan, window: Window, noise: NoiseSource, callback: StepCallback | None = None
    ) -> torch.Tensor:
        """The window's sampled latent (1, 4, F, h, w) from its LR latent `hint`, chunk x tile by chunk x tile."""
        self.placement.activate("unet")
        settings = replace(self.sampler_settings(), batch_guidance=self.batches_guidance(plan))
        return sample_window(
            self.denoise,
            hint,
            self.context,
            self.negative_context,
            window_regions(plan, window),
            settings,
            seed=self.settings.seed,
            window=window.start,
            noise=noise,
            callback=callback,
        )

    def iter_restore(
        self, frames: np.ndarray, plan: Plan, window: Window, noise: NoiseSource | None = None
    ) -> Iterator[torch.Tensor]:
        """Restore one window: float32 frames (g, 3, H, W) in [-1, 1], a VAE group at a time, before quantisation.

        `noise` defaults to the run's `SeededNoise(seed, window.start)`.
        """
        noise = noise or SeededNoise(self.settings.seed, window.start)
        with self.clock.stage("vae_encode"):
            hint = self.encode(frames, plan, noise)
        with self.clock.stage("sampling"):
            latents = self.sample(hint, plan, window, noise)
        groups = self.iter_decode(latents, frames, plan)
        while True:
            with self.clock.stage("vae_decode"):
                group = next(groups, None)
            if group is None:
                return
            yield group

    def restore(self, frames: np.ndarray, plan: Plan, window: Window | None = None) -> np.ndarray:
        """Restore one window of uint8 LR frames to uint8 frames at the plan's output size."""
        if window is None:
            raise ValueError("the STAR engine restores plan windows")
        groups = self.iter_restore(frames, plan, window)
        return np.concatenate([to_uint8(group, self.settings.quantize) for group in groups])

"""The CogVideoX engine: one plan window (one native clip) of LR frames in, restored frames out.

Stage by stage, as the reference's `sample_sr.py` does it for its one 480x720 clip:
uint8 frames -> uint8 bicubic resize to the output size -> [-1, 1] -> canvas padding ->
per native tile: the whole clip VAE-encoded in one pass, the posterior sampled, x0.7 ->
50-step VP DPM-Solver++(2M) SDE from pure noise with dynamic CFG on x0 (the tiles'
estimates feathered together at every step) -> per tile: decode in the reference's
latent groups, feathered into the canvas -> crop -> colour fix against the LR frames ->
uint8 (truncated, as the reference writes). A window shorter than the native clip
(a short shot) is padded in time with its last frame and cut back after decoding.

Placement (`--offload`; on the CPU every mode is the same arithmetic):
- the T5 encoder encodes the prompt once at load, alone on the device, and is freed:
  it never shares the device with sampling;
- none: DiT and VAE stay on the device;
- model: each moves to the device only while it works;
- sequential: the DiT is streamed module by module (accelerate's `cpu_offload`) and the
  VAE works on the CPU in float32: its whole-clip encode and the reference's decode
  groups each need about 15 GiB on a device, more than this mode is for (costs.py).
Random draws come from (seed, window start): windows are independent, so a resumed run
repeats an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import cpu_offload
from diffusers import AutoencoderKLCogVideoX
from safetensors import safe_open

from star_cli.diffusion.cogvideox import cogvideox_x0_fn
from star_cli.diffusion.cogvideox_schedule import cogvideox_schedule
from star_cli.diffusion.noise import derive_seed
from star_cli.diffusion.samplers import sample_vp_dpmpp_2m_sde
from star_cli.diffusion.tiled import Region, joined_x0_fn
from star_cli.errors import StarError
from star_cli.families.base import engine_for_call
from star_cli.families.cogvideox import CogVideoXFamily
from star_cli.families.cogvideox.config import NativeSize, read_config
from star_cli.hub.layout import COGVIDEOX_VARIANT, WeightsPaths
from star_cli.models.cogvideox import STARCogVideoXTransformer
from star_cli.models.cogvideox.frames import to_model_range, to_unit, unit_to_uint8
from star_cli.models.cogvideox.text import T5TextEncoder
from star_cli.models.cogvideox.vae import decode_latent, encode_video
from star_cli.pipeline.colorfix import apply_color_fix
from star_cli.pipeline.engines.placement import resolve_device, resolve_dtype
from star_cli.pipeline.engines.speedups import attention_priority
from star_cli.pipeline.events import Notice, ProgressCallback, ignore
from star_cli.pipeline.plan import VAE_FACTOR, Plan, Tile, Window
from star_cli.pipeline.request import StarSettings
from star_cli.pipeline.timing import StageClock

LATENT_CHANNELS = 16
NOISE_STREAM = 0  # the initial latent, then the solver's draws
POSTERIOR_STREAM = 2  # the VAE posterior samples, tile by tile


def load_denoiser(path: Path, dtype: torch.dtype) -> tuple[STARCogVideoXTransformer, NativeSize]:
    """The converted denoiser at `path` in `dtype` (built on meta, tensors cast one by one), and its native size."""
    config = read_config(path)
    if config is None:
        raise StarError(f"{path}: not a converted STAR CogVideoX denoiser (run `star download-weights --variant cogvideox`)")
    with torch.device("meta"):
        model = STARCogVideoXTransformer(**config["diffusers"])
    with safe_open(path, framework="pt") as handle:
        state = {name: handle.get_tensor(name).to(dtype) for name in handle.keys()}
    missing, unexpected = sorted(set(model.state_dict()) - set(state)), sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        named = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise StarError(f"{path} does not fit its own config: {named}")
    model.load_state_dict(state, assign=True)
    return model.eval(), config["native"]


def encode_prompt(prompt: str, weights: WeightsPaths, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """T5-XXL context (1, 226, d) in float32 on the CPU; the encoder is freed before this returns.

    It runs whole on the device in every offload mode: alone there (nothing else is loaded
    yet), its 4.8B parameters are below the other stages' peaks even in bf16 (8.9 GiB).
    """
    text = T5TextEncoder.from_dirs(weights.text_encoder_dir, weights.tokenizer_dir, device=device, dtype=dtype)
    context = text.encode(prompt).float().cpu()
    del text
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return context


def pixel_weights(tile: Tile) -> tuple[torch.Tensor, torch.Tensor]:
    """The tile's latent feather weights per pixel row and column (each latent weight over its 8 pixels)."""
    rows = torch.tensor(tile.row_weights, dtype=torch.float32).repeat_interleave(VAE_FACTOR)
    cols = torch.tensor(tile.col_weights, dtype=torch.float32).repeat_interleave(VAE_FACTOR)
    return rows, cols


@dataclass
class CogVideoXEngine:
    """Loaded CogVideoX components plus the settings of the run."""

    dit: torch.nn.Module
    vae: AutoencoderKLCogVideoX
    vae_device: torch.device  # the CPU under sequential offload, else the device
    context: torch.Tensor  # (1, 226, d) float32 on the CPU
    settings: StarSettings
    native: NativeSize
    device: torch.device
    dtype: torch.dtype
    weights: WeightsPaths | None = None  # where a new prompt's T5 encoder is read from (None: the prompt is fixed)
    clock: StageClock = field(default_factory=StageClock)  # the stages of each window (pipeline.timing)
    on_evaluations: Callable[[int], None] | None = None  # told the model evaluations of every DiT call
    name: str = "star"
    temporal: bool = True

    @classmethod
    def load(cls, settings: StarSettings, weights: WeightsPaths, *, progress: ProgressCallback = ignore) -> CogVideoXEngine:
        """Encode the prompt (T5, then freed), load the VAE and the DiT, and place them for `settings.offload`."""
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device, CogVideoXFamily.accelerator_dtype)
        custom = settings.checkpoint != COGVIDEOX_VARIANT
        checkpoint = Path(settings.checkpoint).expanduser() if custom else weights.star
        if not checkpoint.is_file():
            raise StarError(f"checkpoint not found: {checkpoint} (give cogvideox or a converted .safetensors file)")
        progress(Notice(f"loading STAR CogVideoX ({checkpoint.name}) on {device} in {str(dtype).removeprefix('torch.')}"))
        clock = StageClock(torch.cuda.synchronize if device.type == "cuda" else None)
        with clock.stage("text"):
            context = encode_prompt(settings.prompt, weights, device, dtype)
        vae_on_host = settings.offload == "sequential" and device.type != "cpu"
        vae_dtype = torch.float32 if vae_on_host else dtype
        vae = AutoencoderKLCogVideoX.from_pretrained(weights.vae_dir, torch_dtype=vae_dtype).eval()
        dit, native = load_denoiser(checkpoint, dtype)
        if settings.offload == "sequential":
            dit = cpu_offload(dit, execution_device=device)
        elif settings.offload == "none":
            vae, dit = vae.to(device), dit.to(device)
        vae_device = torch.device("cpu") if vae_on_host else device
        return cls(dit, vae, vae_device, context, settings, native, device, dtype, weights, clock)

    def with_settings(self, settings: StarSettings) -> CogVideoXEngine:
        """This engine (same loaded models) for other per-call settings.

        A new prompt is encoded here: the T5 encoder loads again, next to the loaded models
        (under --offload none they are on the device with it).
        """
        def encode(engine: CogVideoXEngine) -> None:
            engine.context = encode_prompt(settings.prompt, engine.weights, engine.device, engine.dtype)

        return engine_for_call(self, settings, encode)

    def expect(self, plans: Sequence[Plan], *, share: float = 1.0, progress: ProgressCallback = ignore) -> None:
        """The DiT always runs eagerly (`--compile` is refused for it), so a run's length changes nothing here."""

    @contextmanager
    def _working(self, module: torch.nn.Module) -> Iterator[None]:
        """`--offload model`: `module` is on the device only inside the block (other modes: placed at load)."""
        if self.settings.offload != "model":
            yield
            return
        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")

    def _denoise(self, x: torch.Tensor, lr: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        device, dtype = self.device, self.dtype
        out = self.dit(x.to(device, dtype), lr.to(device, dtype), t.to(device), context.to(device, dtype))
        if self.on_evaluations is not None:
            self.on_evaluations(len(x))  # guidance batched with the prompt counts two
        return out

    def _lr_canvas(self, frames: np.ndarray, plan: Plan) -> torch.Tensor:
        """(1, 3, T, canvas) float32 on the CPU: padded in time to the native clip, uint8 bicubic, edge-padded."""
        clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        if len(clip) < self.native.frames:
            clip = torch.cat([clip, clip[-1:].expand(self.native.frames - len(clip), -1, -1, -1)])
        # uint8 bicubic, as the reference (and models.cogvideox.frames.upscale_uint8, which takes an integer
        # scale) does it, but to any output size: for an integer scale the values are identical.
        lr = to_model_range(F.interpolate(clip, size=plan.output_size, mode="bicubic", align_corners=False))
        lr = F.pad(lr, plan.canvas.padding.torch_pad, mode="replicate")
        return lr.permute(1, 0, 2, 3).unsqueeze(0)

    @torch.no_grad()
    def encode(self, lr: torch.Tensor, plan: Plan, window: Window) -> list[torch.Tensor]:
        """Each tile's LR latent (1, t, 16, h, w): the whole clip encoded at once, the posterior sampled."""
        generator = torch.Generator("cpu").manual_seed(derive_seed(self.settings.seed, window.start, POSTERIOR_STREAM))
        latents = []
        with self._working(self.vae):
            for tile in plan.tiles:
                rows = slice(tile.top * VAE_FACTOR, (tile.top + tile.height) * VAE_FACTOR)
                cols = slice(tile.left * VAE_FACTOR, (tile.left + tile.width) * VAE_FACTOR)
                latent = encode_video(self.vae, lr[..., rows, cols].to(self.vae_device), generator=generator)
                latents.append(latent.permute(0, 2, 1, 3, 4).float())
        return latents

    @torch.no_grad()
    def sample(self, lr_latents: list[torch.Tensor], plan: Plan, window: Window) -> torch.Tensor:
        """The clean latent (1, t, 16, canvas/8) of the window; tiles joined at every step."""
        settings = self.settings
        schedule = cogvideox_schedule(settings.steps, settings.guidance)
        frames = lr_latents[0].shape[1]
        shape = (1, frames, LATENT_CHANNELS, plan.canvas.latent_height, plan.canvas.latent_width)
        generator = torch.Generator("cpu").manual_seed(derive_seed(settings.seed, window.start, NOISE_STREAM))

        def noise() -> torch.Tensor:
            return torch.randn(shape, generator=generator).to(self.device)

        regions = [
            Region.separable((0, frames), (t.top, t.top + t.height), (t.left, t.left + t.width), ([1.0] * frames, t.row_weights, t.col_weights))
            for t in plan.tiles
        ]
        tile_x0 = {id(r): cogvideox_x0_fn(self._denoise, lr.to(self.device), self.context, schedule=schedule) for r, lr in zip(regions, lr_latents)}

        def region_x0_fn(region: Region):  # latents (b, c, t, h, w) for the join, (b, t, c, h, w) for the DiT
            x0_fn = tile_x0[id(region)]
            return lambda x, step: x0_fn(x.permute(0, 2, 1, 3, 4), step).permute(0, 2, 1, 3, 4)

        joined = joined_x0_fn(regions, region_x0_fn, (frames, shape[3], shape[4]), self.device)

        def x0_fn(x: torch.Tensor, step: int) -> torch.Tensor:
            return joined(x.permute(0, 2, 1, 3, 4), step).permute(0, 2, 1, 3, 4)

        with self._working(self.dit), attention_priority(self.device):
            return sample_vp_dpmpp_2m_sde(x0_fn, noise(), schedule.alphas.to(self.device), noise=noise)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, frames: np.ndarray, plan: Plan) -> np.ndarray:
        """Decode tile by tile into the canvas (feathered), crop, colour-fix against the LR frames, uint8."""
        canvas = torch.zeros(3, self.native.frames, plan.canvas.height, plan.canvas.width)
        with self._working(self.vae):
            for tile in plan.tiles:
                crop = latent[..., tile.top : tile.top + tile.height, tile.left : tile.left + tile.width]
                pixels = decode_latent(self.vae, crop.permute(0, 2, 1, 3, 4).to(self.vae_device))[0].cpu()
                if not torch.isfinite(pixels).all():
                    raise StarError("the VAE decode produced NaN/inf values; try --dtype fp32")
                rows, cols = pixel_weights(tile)
                top, left = tile.top * VAE_FACTOR, tile.left * VAE_FACTOR
                canvas[:, :, top : top + len(rows), left : left + len(cols)] += pixels * rows[:, None] * cols[None, :]
        out_h, out_w = plan.output_size
        restored = canvas[:, : len(frames), :out_h, :out_w].permute(1, 0, 2, 3)
        reference = to_model_range(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2))
        fixed = apply_color_fix(self.settings.color_fix, restored, reference)
        return unit_to_uint8(to_unit(fixed)).permute(0, 2, 3, 1).numpy()

    def restore(self, frames: np.ndarray, plan: Plan, window: Window | None = None) -> np.ndarray:
        """Restore one window (at most one native clip) of uint8 LR frames to uint8 frames at the output size."""
        if window is None:
            raise ValueError("the CogVideoX engine restores plan windows")
        if len(frames) > self.native.frames:
            raise ValueError(f"a window of {len(frames)} frames is longer than the native clip ({self.native.frames})")
        with self.clock.stage("vae_encode"):
            lr_latents = self.encode(self._lr_canvas(frames, plan), plan, window)
        with self.clock.stage("sampling"):
            latent = self.sample(lr_latents, plan, window)
        with self.clock.stage("vae_decode"):
            return self.decode(latent, frames, plan)


"""Analytical memory and FLOPs of a plan, so a run that cannot fit fails before it starts.

All constants live in the block below, each with its source. "Measured" figures come from
/work/shared/fixtures/star-reference/MEASUREMENTS.md (the reference ControlledV2VUNet,
fp16, batch 1, memory-efficient attention); the rest are derived from the architectures
and say how.

Assumptions about the engine (what the estimate is of):
- the UNet's activation peak is one forward of the largest chunk on the largest tile,
  for one guidance branch (passes one after the other, as in the reference) or for all
  branches at once (`batched_guidance`, one batch of 2: twice the activations);
- the VAE (star_cli.models.vae) encodes canvas frames one at a time in float32 and
  decodes groups of `vae_group` frames in the run's dtype (autocast) into float32
  frames, each whole or in the plan's VAE tiles (`vae_encode_tile`, `vae_tile`); its
  working set is not alive during UNet passes; its weights stay float32;
- the text encoder is freed once the prompts are encoded, before the UNet and VAE load;
- host memory holds one window's source frames and its restored frames (uint8), and
  float32 cross-fade sums of the frames it shares with its neighbours only
  (star_cli.pipeline.stream.WindowJoiner passes the other frames through).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from star_cli.errors import InputError
from star_cli.pipeline.plan import Plan

GiB = 1024**3

# Parameter counts. UNet+ControlNet: exact, star_i2vgenxl_unet_manifest.json; it is also
# what a model-by-model offload keeps on the device (the largest model). Sequential
# offload (accelerate's cpu_offload) loads one module's own tensors at a time: the
# largest is a 29.5M-parameter output-block convolution (benchmarks/vram_estimate.py).
# VAE: SVD's AutoencoderKLTemporalDecoder (~97.7M). The text tower (~354M) is left out:
# the engine frees it once the prompts are encoded, before the others load.
UNET_PARAMS = 2_041_121_910
UNET_LARGEST_MODULE_PARAMS = 29_492_480
VAE_PARAMS = 97_700_000

# UNet activation peak, fp16, with the engine's feed-forward slicing (32768 tokens),
# measured on our model by benchmarks/vram_estimate.py: about 0.137 GiB + 1.0356e-5 GiB
# per frame x latent pixel (the peak moves from the top GEGLU to the first temporal
# self-attention). Unsliced, the reference's MEASUREMENTS.md gives 19.21 GiB at
# 32x122x216 (ours: 18.40): 8.87 GiB sliced.
ACTIVATION_BASE_BYTES_FP16 = int(0.137 * GiB)
ACTIVATION_BYTES_PER_FRAME_PIXEL_FP16 = 1.0356e-5 * GiB

# Measured FLOPs of one forward per frame: 17.9 TFLOP at 122x216, 8.06 TFLOP at 90x160.
# A straight line a + b*P through these two points has a negative intercept (about -3.8
# TFLOP), which would make small tiles cost less than nothing: the growth is superlinear
# because spatial self-attention is quadratic in the tokens of a frame. We fit
# c1*P + c2*P^2 through both points instead: c2 comes out near 1.0e4 FLOP per token^2,
# matching the attention count at the full-resolution level (about seven 320-channel
# spatial transformers in UNet+ControlNet, 4 * 320 FLOP per token pair each).
_P_LARGE, _F_LARGE = 122 * 216, 17.9e12
_P_SMALL, _F_SMALL = 90 * 160, 8.06e12
FLOPS_PER_TOKEN_SQUARED = (_F_LARGE / _P_LARGE - _F_SMALL / _P_SMALL) / (_P_LARGE - _P_SMALL)
FLOPS_PER_TOKEN = _F_SMALL / _P_SMALL - FLOPS_PER_TOKEN_SQUARED * _P_SMALL

# VAE working sets, in channels of activation per pixel-frame at full size. Decoder (derived
# from the diffusers architecture; measured within 0.98-0.99 on an H200): its last upsampler
# interpolates a 256-channel map to full size and convolves it, and the first full-size
# res-block keeps input, normalised and activated copies alive: about 1024.
VAE_DECODE_CHANNELS = 1024
# Encoder: measured on an H200 (benchmarks/gpu_bench.py, float32 encode): 6.49 GiB peak at
# 976x1728 and 7.22 GiB at 1104x1984 with the fp16 UNet resident, i.e. 310-349 channels of
# float32 per pixel above weights and latents (the meta-tensor tracker's 650 counted
# buffers the CUDA allocator reuses). 350 keeps the estimate just above both.
VAE_ENCODE_CHANNELS = 350
# The default of star_cli.models.vae's DEFAULT_GROUP (not imported here because that module
# pulls in diffusers, which --dry-run must not wait for).
VAE_GROUP = 3

# Sampler state per window, float32 latents of 4 channels: x, the LR hint, the joined x0
# and its weight sum, the DPM-Solver++(2M) history, and the Brownian tree's nodes and
# 4-entry cache; measured: 13 window-sized latents (benchmarks/vram_estimate.py).
LATENT_CHANNELS = 4
LATENT_COPIES = 13

# Host memory of the process before any frame or weight: Python, torch and the CUDA
# runtime libraries (typical resident size of a CUDA torch process).
HOST_RUNTIME_BYTES = 2 * GiB

FLOAT32 = 4
Offload = Literal["none", "model", "sequential"]
_DEVICE_WEIGHT_PARAMS = {"model": UNET_PARAMS, "sequential": UNET_LARGEST_MODULE_PARAMS}


def flops_per_frame(latent_pixels: int) -> float:
    """FLOPs of one UNet+ControlNet forward per frame on a tile of `latent_pixels` (one branch)."""
    return FLOPS_PER_TOKEN * latent_pixels + FLOPS_PER_TOKEN_SQUARED * latent_pixels**2


def activation_bytes(frames: int, latent_pixels: int, dtype_bytes: int = 2) -> int:
    """Peak UNet activation memory of one forward over `frames` x `latent_pixels` (batch 1)."""
    fp16 = ACTIVATION_BASE_BYTES_FP16 + frames * latent_pixels * ACTIVATION_BYTES_PER_FRAME_PIXEL_FP16
    return int(fp16 * dtype_bytes / 2)


@dataclass(frozen=True)
class Estimate:
    """What a plan costs. Byte counts are peaks of the component they name."""

    weights_bytes: int  # on the device (the UNet, or one block of it, under offload; the VAE in float32)
    activation_bytes: int  # UNet, largest chunk x largest tile
    vae_bytes: int  # VAE: the larger of vae_encode_bytes and vae_decode_bytes
    vae_encode_bytes: int  # one canvas frame (or encode tile), float32
    vae_decode_bytes: int  # one frame group (or decode tile), the run's dtype
    latent_bytes: int  # sampler state of the largest window
    frame_bytes: int  # host: frames and cross-fade sums of the largest window
    offloaded_bytes: int  # host: weights kept off the device by offloading
    flops: float  # UNet, whole video, all steps and branches
    output_frames: int
    offload: Offload

    @property
    def device_bytes(self) -> int:
        return self.weights_bytes + self.latent_bytes + max(self.activation_bytes, self.vae_bytes)

    @property
    def host_bytes(self) -> int:
        return HOST_RUNTIME_BYTES + self.frame_bytes + self.offloaded_bytes

    @property
    def flops_per_output_frame(self) -> float:
        return self.flops / self.output_frames


def _vae_tile_pixels(plan: Plan, tile: int | None) -> int:
    """Pixels of the largest VAE tile of a canvas frame (`tile` None: the whole frame)."""
    height, width = plan.canvas.latent_height, plan.canvas.latent_width
    if tile is not None:
        height, width = min(height, tile), min(width, tile)
    return height * width * 64


def vae_encode_bytes(plan: Plan) -> int:
    """Peak of encoding one canvas frame (or one encode tile of it) in float32."""
    return _vae_tile_pixels(plan, plan.options.vae_encode_tile) * VAE_ENCODE_CHANNELS * FLOAT32


def vae_decode_bytes(plan: Plan, dtype_bytes: int = 2, vae_group: int = VAE_GROUP) -> int:
    """Peak of decoding one frame group (or one decode tile of it) into float32 canvas frames."""
    canvas = plan.canvas.height * plan.canvas.width
    tile = _vae_tile_pixels(plan, plan.options.vae_tile)
    return vae_group * (tile * VAE_DECODE_CHANNELS * dtype_bytes + canvas * 3 * FLOAT32) + canvas * FLOAT32


def vae_bytes(plan: Plan, dtype_bytes: int = 2, vae_group: int = VAE_GROUP) -> int:
    """Peak of the VAE: encoding a canvas frame, or decoding a frame group (each in the plan's tiles)."""
    return max(vae_encode_bytes(plan), vae_decode_bytes(plan, dtype_bytes, vae_group))


def _largest_overlap(plan: Plan) -> int:
    """Most frames two consecutive windows share (a window's float sums cover both of its ends)."""
    return max((a.end - b.start for a, b in zip(plan.windows, plan.windows[1:])), default=0)


def estimate(
    plan: Plan,
    *,
    dtype_bytes: int = 2,
    offload: Offload = "none",
    vae_group: int = VAE_GROUP,
    batched_guidance: bool = False,
    model_params: int = UNET_PARAMS + VAE_PARAMS,
) -> Estimate:
    """Memory and FLOPs of running `plan` with weights and activations of `dtype_bytes` (2: fp16/bf16).

    `model_params` is what the weights actually hold (the released models by default);
    weights resident under offload scale with it.

    `offload`: 'none' keeps every model on the device; 'model' moves whole models in and
    out (the UNet is the largest); 'sequential' streams the UNet block by block. Both
    keep all weights in host memory.
    """
    if offload not in ("none", "model", "sequential"):
        raise ValueError(f"unknown offload mode {offload!r}")
    steps_branches = plan.options.model_steps * plan.options.guidance_branches
    tile_pixels = max(t.height * t.width for t in plan.tiles)
    batch = plan.options.guidance_branches if batched_guidance else 1
    tile_flops = sum(flops_per_frame(t.height * t.width) for t in plan.tiles)
    weights = model_params * dtype_bytes + VAE_PARAMS * (FLOAT32 - dtype_bytes)
    scale = model_params / (UNET_PARAMS + VAE_PARAMS)
    out_pixels = plan.output_size[0] * plan.output_size[1]
    in_pixels = plan.input_size[0] * plan.input_size[1]
    window_frames = max(w.length for w in plan.windows)
    latent_pixels = plan.canvas.latent_height * plan.canvas.latent_width
    return Estimate(
        weights_bytes=int(_DEVICE_WEIGHT_PARAMS[offload] * scale) * dtype_bytes if offload != "none" else weights,
        activation_bytes=batch * activation_bytes(max(c.length for c in plan.chunks), tile_pixels, dtype_bytes),
        vae_bytes=vae_bytes(plan, dtype_bytes, vae_group),
        vae_encode_bytes=vae_encode_bytes(plan),
        vae_decode_bytes=vae_decode_bytes(plan, dtype_bytes, vae_group),
        latent_bytes=window_frames * LATENT_CHANNELS * latent_pixels * FLOAT32 * LATENT_COPIES,
        frame_bytes=window_frames * (in_pixels + out_pixels) * 3 + 2 * _largest_overlap(plan) * out_pixels * 3 * FLOAT32,
        offloaded_bytes=weights if offload != "none" else 0,
        flops=plan.frame_evaluations * tile_flops * steps_branches,
        output_frames=plan.num_frames,
        offload=offload,
    )


def _require(need: int, available: int, memory: str, state: str, hint: str) -> None:
    """Raise the one-line InputError of a plan needing more `memory` than is `state` (free/available)."""
    if need > available:
        raise InputError(
            f"this plan needs about {need / GiB:.1f} GiB of {memory} but {available / GiB:.1f} GiB is {state}; {hint}"
        )


def cpu_only_bytes(est: Estimate) -> int:
    """What a run without an accelerator holds in host memory (weights counted once even under offload)."""
    return est.host_bytes + est.device_bytes - min(est.offloaded_bytes, est.weights_bytes)


def check_fits(
    est: Estimate, host_bytes_available: int, device_bytes_available: int | None, *, dtype_bytes: int = 2
) -> None:
    """Raise InputError (one line, with what to change) if `est` exceeds the memory available.

    `device_bytes_available` None means no accelerator: everything lives in host memory
    (weights counted once even when an offload mode was asked for). The hint names what
    would actually bring the need under the limit: when the weights alone do not fit,
    smaller chunks or tiles cannot help, a smaller precision (or offloading) can.
    """
    if device_bytes_available is None:
        need = cpu_only_bytes(est)
        fixed = est.weights_bytes + HOST_RUNTIME_BYTES
        if dtype_bytes > 2 and fixed > host_bytes_available >= need - est.weights_bytes // 2:
            hint = "--dtype bf16 halves the weights"
        elif fixed > host_bytes_available:
            hint = f"the model and runtime alone need {fixed / GiB:.1f} GiB: use a machine with more memory, or a GPU"
        else:
            hint = "try a smaller --chunk-len, --tile-size or --window-chunks"
        _require(need, host_bytes_available, "memory", "available", hint)
        return
    if est.weights_bytes > device_bytes_available and est.offload != "sequential":
        device_hint = "the weights alone need more: try --offload " + ("model" if est.offload == "none" else "sequential")
    else:
        device_hint = "try a smaller --tile-size or --chunk-len"
        if est.offload != "sequential":
            device_hint += ", or --offload sequential"
    _require(est.device_bytes, device_bytes_available, "GPU memory", "free", device_hint)
    host_hint = "try a smaller --window-chunks or --chunk-len"
    if est.offload != "none":
        host_hint += ", or --offload none"
    _require(est.host_bytes, host_bytes_available, "memory", "available", host_hint)

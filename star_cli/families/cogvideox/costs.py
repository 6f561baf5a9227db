"""Analytical memory and FLOPs of a CogVideoX plan, so a run that cannot fit fails before it starts.

Every pass of this family has the same shape: one native tile (480x720 for the release)
of one native clip (25 frames, 7 latent frames), so each stage's working set is a
measured constant scaled by the tile's pixel-frames (tiny weights declare smaller native
sizes). The constants were measured at full size, bf16, on meta tensors with the
dispatch-level tracker of benchmarks/_tracker.py (`benchmarks/cogvideox_memory.py`
prints them again next to this model's figures):

- T5-XXL encoder 4,762,310,656 parameters; it encodes the prompt once, then is freed
  before the DiT loads, so it never shares the device with sampling (its stage, 8.9 GiB
  in bf16, is below every other stage's peak).
- DiT (diffusers' CogVideoXTransformer3DModel at STAR's config + LIEM) 5,570,483,880
  parameters; its largest module (a feed-forward projection, 37.7M parameters) is what
  sequential offload keeps on the device. A sampling step (one forward with the two
  guidance branches batched, and the sampler's state): 1.59 GiB at 2 x 9,676 tokens,
  linear in tokens (attention runs as a memory-efficient kernel).
- VAE (AutoencoderKLCogVideoX) 215,583,907 parameters. Whole-clip encode (the reference
  encodes the 25 frames in one pass; GroupNorm statistics span the clip) with the
  posterior sample: 14.90 GiB at 25x480x720. Decode in the reference's latent groups
  (its first group, 3 latent frames -> 9 frames, plus the causal convolutions' caches
  carried between groups): 14.74 GiB.

Policies per offload mode (what `families.cogvideox.engine` does):
- none: DiT and VAE resident; peak = weights + the whole-clip encode.
- model: one component on the device at a time; peak = max(VAE + encode, DiT + its
  activations, VAE + decode).
- sequential: the DiT streamed module by module (accelerate's `cpu_offload`); the VAE
  works on the CPU in float32, since either of its passes alone needs more than the
  12 GB this mode is for: peak = DiT module + a step's activations (the T5 stage, 8.9
  GiB alone on the device at load, is below the 12 GB too). The VAE's working set
  then lives in host memory, twice its bf16 size.
"""

from __future__ import annotations

from dataclasses import dataclass

from star_cli.families.cogvideox.config import TEMPORAL_COMPRESSION
from star_cli.pipeline.estimate import FLOAT32, GiB, Estimate, _largest_overlap
from star_cli.pipeline.plan import VAE_FACTOR, Plan

T5_PARAMS = 4_762_310_656
DIT_PARAMS = 5_570_483_880
DIT_LARGEST_MODULE_PARAMS = 37_761_024
VAE_PARAMS = 215_583_907

# Release shapes the constants were measured at.
_NATIVE_PIXELS = 480 * 720
_TEXT_TOKENS = 226
_PATCH = 2
_HIDDEN, _LAYERS = 3072, 42
_LATENT_CHANNELS = 16

# bf16 working sets per pixel-frame of the native clip (25 frames) and per token.
ENCODE_BYTES_PER_PIXEL_FRAME = 14.90 * GiB / (25 * _NATIVE_PIXELS)
DECODE_BYTES_PER_PIXEL_FRAME = 14.74 * GiB / (25 * _NATIVE_PIXELS)
DIT_ACTIVATION_BYTES_PER_TOKEN = 1.59 * GiB / (2 * (_TEXT_TOKENS + 7 * 30 * 45))
T5_ACTIVATION_BYTES = int(0.035 * GiB)  # one 226-token prompt

# Sampler state per window, float32 latents: x, the joined x0 and its previous value, the
# join's sum, the noise draw, the batched network input, and each tile's LR latent.
LATENT_COPIES = 8


@dataclass(frozen=True)
class CogVideoXEstimate(Estimate):
    """`Estimate` with the stages apart: the VAE and the DiT need not share the device."""

    vae_weights_bytes: int = 0  # on the device while the VAE works
    host_work_bytes: int = 0  # the VAE's working set when it runs on the CPU (sequential offload)
    text_bytes: int = 0  # the T5 encoder alone on the device while it encodes the prompt, at load

    @property
    def host_bytes(self) -> int:
        return super().host_bytes + self.host_work_bytes

    @property
    def device_bytes(self) -> int:
        if self.offload == "none":
            resident = self.weights_bytes + self.vae_weights_bytes + max(self.activation_bytes, self.vae_bytes)
        else:
            resident = max(self.weights_bytes + self.activation_bytes, self.vae_weights_bytes + self.vae_bytes)
        return max(self.text_bytes, self.latent_bytes + resident)


def tokens(plan: Plan) -> int:
    """Tokens of one DiT pass: the text, then a native tile's patches for each latent frame."""
    tile = plan.tiles[0]
    latent_frames = (plan.options.chunk_len - 1) // TEMPORAL_COMPRESSION + 1
    return _TEXT_TOKENS + latent_frames * (tile.height // _PATCH) * (tile.width // _PATCH)


def forward_flops(token_count: int, params: int = DIT_PARAMS) -> float:
    """FLOPs of one DiT forward per batch item: every weight once per token, plus joint attention."""
    return 2.0 * params * token_count + 4.0 * token_count**2 * _HIDDEN * _LAYERS


def estimate(
    plan: Plan, *, dtype_bytes: int = 2, offload: str = "none", model_params: int | None = None
) -> CogVideoXEstimate:
    """Memory and FLOPs of `plan` run by the CogVideoX engine with `dtype_bytes` weights (2: bf16)."""
    if offload not in ("none", "model", "sequential"):
        raise ValueError(f"unknown offload mode {offload!r}")
    params = model_params or DIT_PARAMS + VAE_PARAMS
    dit_params = params * DIT_PARAMS // (DIT_PARAMS + VAE_PARAMS)
    vae_params = params - dit_params
    tile = plan.tiles[0]
    tile_pixels = tile.height * tile.width * VAE_FACTOR**2
    frames = plan.options.chunk_len
    scale = dtype_bytes / 2
    encode = int(ENCODE_BYTES_PER_PIXEL_FRAME * frames * tile_pixels * scale)
    decode = int(DECODE_BYTES_PER_PIXEL_FRAME * frames * tile_pixels * scale)
    token_count = tokens(plan)
    streamed = offload == "sequential"
    canvas = plan.canvas.height * plan.canvas.width
    latent_frames = (frames - 1) // TEMPORAL_COMPRESSION + 1
    out_pixels = plan.output_size[0] * plan.output_size[1]
    in_pixels = plan.input_size[0] * plan.input_size[1]
    return CogVideoXEstimate(
        weights_bytes=(DIT_LARGEST_MODULE_PARAMS if streamed else dit_params) * dtype_bytes,
        activation_bytes=int(plan.options.guidance_branches * token_count * DIT_ACTIVATION_BYTES_PER_TOKEN * scale),
        vae_bytes=0 if streamed else max(encode, decode),
        vae_encode_bytes=0 if streamed else encode,
        vae_decode_bytes=0 if streamed else decode,
        latent_bytes=latent_frames * _LATENT_CHANNELS * (canvas // VAE_FACTOR**2) * FLOAT32 * LATENT_COPIES,
        # host: the window's frames in and out, the float32 canvas the decoded tiles are feathered into,
        # and the cross-fade sums of window overlaps
        frame_bytes=frames * (in_pixels + out_pixels) * 3 + frames * canvas * 3 * FLOAT32
        + 2 * _largest_overlap(plan) * out_pixels * 3 * FLOAT32,
        offloaded_bytes=dit_params * dtype_bytes + vae_params * (FLOAT32 if streamed else dtype_bytes) if offload != "none" else 0,
        flops=len(plan.chunks) * len(plan.tiles) * plan.options.model_steps * plan.options.guidance_branches
        * forward_flops(token_count, dit_params),
        output_frames=plan.num_frames,
        offload=offload,
        vae_weights_bytes=0 if streamed else vae_params * dtype_bytes,
        host_work_bytes=int(max(encode, decode) * FLOAT32 / dtype_bytes) if streamed else 0,
        # the T5 encoder of the same release as the DiT and VAE: scaled with them (tiny test weights are tiny)
        text_bytes=int((T5_PARAMS * dtype_bytes + T5_ACTIVATION_BYTES * scale) * params / (DIT_PARAMS + VAE_PARAMS)),
    )

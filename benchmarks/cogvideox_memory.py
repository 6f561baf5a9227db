"""Peak accelerator memory of the full-size STAR CogVideoX-5B pipeline, per offload mode, vs the targets.

The engine's own stages (`star_cli.families.cogvideox.engine.CogVideoXEngine`) run at the
real shapes, one native clip of 25 frames at 480x720 (an LR clip of 180x120 at x4), on
meta tensors under the dispatch-level tracker of `_tracker.py` (live storage bytes,
attention as a memory-efficient kernel): no GPU, no weights. `--device cuda` runs the
same stages on a GPU with random full-size weights and reads the CUDA allocator's peak
instead (T5 left out there: its stage is measured on meta only).

A stage's peak is the weights resident on the device in that stage plus the most
bytes the stage itself holds at once:
- text: T5-XXL encoding one 226-token prompt (alone on the device: the engine frees it
  before anything else loads);
- encode: the whole clip VAE-encoded in one pass (posterior sampled);
- sample: two steps of the 50-step sampler (each step has the same peak: one DiT
  forward with both guidance branches batched, plus the sampler state);
- decode: the reference's latent groups decoded and feathered into the canvas.
Resident weights: `none` DiT + VAE; `model` the working model; `sequential` the
largest module of the streamed DiT (accelerate's `cpu_offload` loads one module's own
tensors at a time), and the VAE works on the CPU in float32 (0 on the device; its
working set, doubled for float32, is host memory).

Printed: each stage's measured working set next to the constant `star_cli.families.cogvideox.costs`
uses, then per mode the stage peaks (GiB, weights included), the largest, the target
(GiB: a "24 GB" card holds 24 GiB) and the analytic estimate `--dry-run` shows.

    python benchmarks/cogvideox_memory.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX
from transformers import T5Config, T5EncoderModel

sys.path.insert(0, str(Path(__file__).parent))
from _tracker import GiB, largest_direct_bytes, module_bytes, track_memory  # noqa: E402

from star_cli.families import get_family  # noqa: E402
from star_cli.families.cogvideox import costs as analytic  # noqa: E402
from star_cli.families.cogvideox.config import RELEASE  # noqa: E402
from star_cli.families.cogvideox.engine import CogVideoXEngine  # noqa: E402
from star_cli.hub.sources import load_sources  # noqa: E402
from star_cli.models.cogvideox import STARCogVideoXTransformer  # noqa: E402
from star_cli.pipeline.plan import Plan, PlanOptions, make_plan  # noqa: E402
from star_cli.pipeline.request import StarSettings  # noqa: E402

BF16 = torch.bfloat16
TARGETS_GIB = {"none": 40.0, "model": 24.0, "sequential": 12.0}
SAMPLE_STEPS = 2
VAE_CONFIG = dict(
    block_out_channels=(128, 256, 256, 512), layers_per_block=3, latent_channels=16, norm_num_groups=32, norm_eps=1e-6,
    temporal_compression_ratio=4, scaling_factor=0.7, use_quant_conv=False, use_post_quant_conv=False,
)
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128, feed_forward_proj="gated-gelu")


def dit_config() -> dict:
    component = next(c for c in load_sources().components if c.name == "star_cogvideox")
    return dict(component.config["diffusers"])


def materialise(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Meta module -> bf16 on `device`: real storage with small random values (the values do not matter)."""
    module = module.to(dtype=BF16)
    if device.type == "meta":
        return module.eval()
    module = module.to_empty(device=device)
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                tensor.normal_(0.0, 0.02)
    return module.eval()


def build(device: torch.device, with_text: bool) -> tuple[torch.nn.Module, AutoencoderKLCogVideoX, torch.nn.Module | None]:
    with torch.device("meta"):
        dit = STARCogVideoXTransformer(**dit_config())
        vae = AutoencoderKLCogVideoX(**VAE_CONFIG)
        t5 = T5EncoderModel(T5Config(is_encoder_decoder=False, use_cache=False, **T5_XXL)) if with_text else None
    text = materialise(t5, device) if t5 is not None else None
    return materialise(dit, device), materialise(vae, device), text


@contextmanager
def measure(device: torch.device, *models: torch.nn.Module) -> Iterator[list[int]]:
    """The bytes the block adds at its peak (meta: tracked storages; cuda: the allocator's peak)."""
    result: list[int] = []
    if device.type == "meta":
        with track_memory(*models) as tracker:
            yield result
        result.append(tracker.peak.bytes)
        return
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        yield result
    torch.cuda.synchronize()
    result.append(torch.cuda.max_memory_allocated() - base)


def release_plan() -> Plan:
    family = get_family("cogvideox")
    d = family.defaults(Path("/nonexistent"), None)
    options = PlanOptions(
        scale=4, chunk_len=d.chunk_len, chunk_overlap=d.chunk_overlap, tile_size=d.tile_size, tile_overlap=d.tile_overlap,
        window_chunks=d.window_chunks, grid=d.grid, model_steps=d.steps, guidance_branches=2,
    )
    return make_plan(RELEASE.frames, RELEASE.height // 4, RELEASE.width // 4, options)


def stage_peaks(device: torch.device) -> dict[str, int]:
    """Working sets (bytes, no weights) of the text, encode, sample and decode stages."""
    dit, vae, t5 = build(device, with_text=device.type == "meta")
    plan = release_plan()
    window = plan.windows[0]
    settings = StarSettings(model="cogvideox", checkpoint="cogvideox", steps=SAMPLE_STEPS, guidance=6.0)
    context = torch.zeros(1, 226, 4096)
    engine = CogVideoXEngine(dit, vae, device, context, settings, RELEASE, device, BF16)
    frames = np.zeros((window.length, *plan.input_size, 3), dtype=np.uint8)
    peaks: dict[str, int] = {}
    if t5 is not None:
        with measure(device, t5) as out:
            t5(input_ids=torch.zeros(1, 226, dtype=torch.long, device=device))
        peaks["text"] = out[0]
    lr = engine._lr_canvas(frames, plan)
    with measure(device, vae) as out:
        lr_latents = engine.encode(lr, plan, window)
    peaks["encode"] = out[0]
    with measure(device, dit) as out:
        latent = engine.sample(lr_latents, plan, window)
    peaks["sample"] = out[0]
    with measure(device, vae) as out:
        engine.decode(latent, frames, plan)
    peaks["decode"] = out[0]
    weights = {
        "dit": module_bytes(dit), "dit_module": largest_direct_bytes(dit),
        "vae": module_bytes(vae), "vae_module": largest_direct_bytes(vae),
        "t5": module_bytes(t5) if t5 is not None else analytic.T5_PARAMS * 2,
    }
    return peaks | {f"weights.{k}": v for k, v in weights.items()}


def per_mode(p: dict[str, int]) -> dict[str, dict[str, int]]:
    """Stage peaks with the weights each offload mode keeps on the device in that stage."""
    dit, vae = p["weights.dit"], p["weights.vae"]
    text = p["weights.t5"] + p.get("text", 0)
    return {
        "none": {"text": text, "encode": dit + vae + p["encode"], "sample": dit + vae + p["sample"], "decode": dit + vae + p["decode"]},
        "model": {"text": text, "encode": vae + p["encode"], "sample": dit + p["sample"], "decode": vae + p["decode"]},
        "sequential": {
            "text": text, "encode": 0, "sample": p["weights.dit_module"] + p["sample"], "decode": 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="meta", choices=["meta", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.time()
    peaks = stage_peaks(device)
    plan = release_plan()
    print(f"STAR CogVideoX-5B, one clip of {RELEASE.frames} frames at {RELEASE.height}x{RELEASE.width}, bf16, on {args.device}")
    print(f"parameters: DiT {peaks['weights.dit'] // 2:,}, VAE {peaks['weights.vae'] // 2:,}, T5 {peaks['weights.t5'] // 2:,}")
    tokens = analytic.tokens(plan)
    constants = {
        "text": None,
        "encode": analytic.ENCODE_BYTES_PER_PIXEL_FRAME * RELEASE.frames * RELEASE.height * RELEASE.width,
        "sample": 2 * tokens * analytic.DIT_ACTIVATION_BYTES_PER_TOKEN,
        "decode": analytic.DECODE_BYTES_PER_PIXEL_FRAME * RELEASE.frames * RELEASE.height * RELEASE.width,
    }
    print("\nstage working sets (no weights):")
    for stage, constant in constants.items():
        if stage in peaks:
            used = f"   costs.py: {constant / GiB:6.2f} GiB ({peaks[stage] / constant:.3f})" if constant else ""
            print(f"  {stage:7s} {peaks[stage] / GiB:6.2f} GiB{used}")
    family = get_family("cogvideox")
    print("\nper offload mode (GiB, weights included):")
    print(f"  {'mode':11s}" + "".join(f"{s:>8s}" for s in ("text", "encode", "sample", "decode")) + "    peak  target  ratio  --dry-run")
    for mode, stages in per_mode(peaks).items():
        peak = max(stages.values())
        shown = family.estimate(plan, dtype_bytes=2, offload=mode, vae_group=3).device_bytes
        cells = "".join(f"{stages[s] / GiB:8.2f}" for s in ("text", "encode", "sample", "decode"))
        print(f"  {mode:11s}{cells}  {peak / GiB:6.2f}  {TARGETS_GIB[mode]:6.1f}  {peak / GiB / TARGETS_GIB[mode]:5.2f}  {shown / GiB:6.2f}")
    print(f"\n({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()

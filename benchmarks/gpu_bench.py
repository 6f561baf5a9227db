"""Speed and memory of the STAR engine on a real card: one command, random weights, no files.

Builds the full-size UNet + ControlNet, the SVD temporal VAE and the OpenCLIP-H text
tower with random weights directly on the device (`_models.py`), and runs the
engine's own path, `StarEngine.encode -> sample -> decode` (plan, VAE encode per
frame, sampling chunk x tile by chunk x tile with guidance, grouped VAE decode and
colour fix), for two shapes:

- toy:   72 frames of 426x240 at x4 (the reference's example; ~20 min on an A100 there)
- 1080p: 32 frames of 960x540 at x2

each under two policies on the same card and weights: `reference` (its 720x1280 white
canvas, chunks of 32 with 16 overlap, no tiles, the two guidance passes one after the
other, torch's default kernels: torch's SDPA order, native GroupNorm and Conv3d) and
`ours` (the plan's defaults, guidance batched when the estimate fits, the engine's
`attention_priority` and `device_forms`, `--compile` if asked).

What is timed and what is extrapolated (said again in the output):
- sampling runs `--steps` model calls (evenly spaced) of the real solver instead of
  the full run's 14 ('fast' 15 steps). The first call is the warm-up (kernel selection,
  allocator, compilation); the later calls give the time per call, which is multiplied
  out to 14 calls and to every window of the plan (by FLOPs).
- the VAE encodes and decodes `--vae-frames` frames after a one-frame/one-group warm-up;
  the time per frame is multiplied out to every frame of every window. Frames of the
  window's hint past the encoded ones repeat them (values do not change the cost).
- full-run totals = text + encode + sampling + decode, plus each stage's warm-up once.

Per stage: wall time, evaluations per second, TFLOP/s from torch's FLOP counter on
meta tensors (`flops.py`, `_tracker.py`), MFU against the card's dense fp16/bf16 peak,
peak device memory (torch.cuda.max_memory_allocated) against `estimate.py`'s prediction,
and host RSS. A JSON file (`--out`) and a table. Needs torch, diffusers, transformers,
torchsde and star_cli only: no PyAV, no weights, no network.

    python benchmarks/gpu_bench.py                      # CUDA, fp16, both shapes and policies
    python benchmarks/gpu_bench.py --tiny --device cpu  # smoke test: tiny models, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
import _models as models  # noqa: E402
from _bench_report import memory, render_table, speedups, stage  # noqa: E402
from _card import card_name, card_peak, device_peak, host_rss, reset_peak, sync  # noqa: E402
from _tracker import count_flops  # noqa: E402
from flops import forward_flops  # noqa: E402

from star_cli.diffusion.noise import SeededNoise  # noqa: E402
from star_cli.models.attention import MAX_BATCH_HEADS  # noqa: E402
from star_cli.models.config import STARConfig  # noqa: E402
from star_cli.models.text import TextEncoder  # noqa: E402
from star_cli.models.vae import VideoVAE  # noqa: E402
from star_cli.pipeline.engines.placement import DTYPES, Placement  # noqa: E402
from star_cli.pipeline.engines.speedups import attention_backend, fused_attention_error  # noqa: E402
import star_cli.families.i2vgenxl.engine as engine_module  # noqa: E402
from star_cli.families.i2vgenxl.engine import FEED_FORWARD_CHUNK, StarEngine  # noqa: E402
from star_cli.pipeline.estimate import GiB, Estimate, estimate  # noqa: E402
from star_cli.pipeline.plan import Plan, PlanOptions, Window, make_plan  # noqa: E402
from star_cli.pipeline.request import BATCH_GUIDANCE, FAST_STEPS, StarSettings, model_calls, parse_size  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    frames: int
    height: int
    width: int
    scale: float


CASES = {
    "toy": Case("toy", 72, 240, 426, 4.0),
    "1080p": Case("1080p", 32, 540, 960, 2.0),
}
TINY_CASES = {  # the reference policy's canvas is 720x1280 whatever the shape: slow on a CPU even when tiny
    "toy": Case("toy", 4, 16, 24, 4.0),
    "1080p": Case("1080p", 2, 16, 24, 2.0),
}
POLICIES = ("reference", "ours")
SOLVER = "dpmpp_2m_sde"


class Log:
    """Progress lines with the elapsed time, flushed at once so a cut-off log still says where it was."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", flush=True)


# -- FLOPs (meta tensors, torch's counter) ---------------------------------------------------


@cache
def meta_vae(tiny: bool) -> VideoVAE:
    return VideoVAE(models.vae("meta", torch.float16, tiny=tiny))


@cache
def vae_flops(tiny: bool, height: int, width: int, group: int) -> tuple[int, int]:
    """FLOPs of encoding one canvas frame and of decoding one group, as the engine's VideoVAE tiles them."""
    vae = meta_vae(tiny)
    with count_flops() as counter:
        vae.encode(torch.empty(1, 3, height, width, dtype=torch.float16, device="meta"))
    encode = counter.get_total_flops()
    latent = torch.empty(group, 4, height // 8, width // 8, dtype=torch.float16, device="meta")
    with count_flops() as counter:
        next(vae.iter_decode(latent, group=group))
    return encode, counter.get_total_flops()


def window_step_flops(plan: Plan, window: Window, config: STARConfig) -> int:
    """UNet FLOPs of one model call of one guidance branch over `window` (every chunk x tile)."""
    shapes = Counter((c.length, t.height, t.width) for c in window.chunks for t in plan.tiles)
    return sum(count * forward_flops(*shape, config) for shape, count in shapes.items())


def attention_shapes(config: STARConfig, tiny: bool) -> list[tuple[int, int, int, int]]:
    """SDPA calls of the UNet at its widest level, (batch, heads, tokens, head_dim): spatial on a
    default tile (592x960 px: 74x120 latents), and one launch of temporal attention (16384
    sequence-heads of 32 frames, `models.attention.MAX_BATCH_HEADS`)."""
    heads = config.dim // config.head_dim
    tokens = 10 * 16 if tiny else 74 * 120
    return [(1, heads, tokens, config.head_dim), (MAX_BATCH_HEADS // heads, heads, 32, config.head_dim)]


# -- one policy on one case -------------------------------------------------------------------


def plan_for(case: Case, policy: str, tile_size: tuple[int, int] | None | str) -> Plan:
    steps = model_calls(SOLVER, FAST_STEPS)
    if policy == "reference":
        options = replace(PlanOptions.reference(case.scale), model_steps=steps)
    else:
        options = PlanOptions(scale=case.scale, model_steps=steps)
        if tile_size != "default":
            options = replace(options, tile_size=tile_size)
    return make_plan(case.frames, case.height, case.width, options)


def run_policy(
    engine: StarEngine, case: Case, policy: str, args: argparse.Namespace, peak: float | None, text_seconds: float, log: Log
) -> dict:
    """Plan `case` under `policy`, time encode -> sample -> decode of its largest window, extrapolate.

    The full-run total includes the text encoder's `text_seconds` (run once, shared by the policies).
    """
    device, tiny = engine.device, args.tiny
    plan = plan_for(case, policy, args.tile_size)
    window = max(plan.windows, key=lambda w: w.length)
    frames_all = sum(w.length for w in plan.windows)
    batched = engine.batches_guidance(plan)
    est: Estimate = estimate(
        plan, dtype_bytes=engine.dtype.itemsize, vae_group=engine.settings.vae_group, batched_guidance=batched,
        model_params=sum(p.numel() for p in engine.unet.parameters()) + sum(p.numel() for p in engine.vae.model.parameters()),
    )
    tiles = sorted(Counter(f"{t.height * 8}x{t.width * 8}" for t in plan.tiles).items())
    record = {
        "case": case.name, "policy": policy,
        "canvas": f"{plan.canvas.width}x{plan.canvas.height}", "output": f"{plan.output_size[1]}x{plan.output_size[0]}",
        "tiles": len(plan.tiles), "tile_sizes": dict(tiles), "chunks": [c.length for c in plan.chunks],
        "windows": len(plan.windows), "batched_guidance": batched,
        "compiled": bool(engine.settings.compile),
    }
    log(f"{case.name}/{policy}: canvas {record['canvas']}, {len(plan.tiles)} tile(s) {dict(tiles)}, chunks "
        f"{record['chunks']}, {len(plan.windows)} window(s), guidance {'batched' if batched else 'two passes'}")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (window.length, case.height, case.width, 3), dtype=np.uint8)
    vae_frames = max(1, min(args.vae_frames, window.length))
    encode_flops, decode_flops = vae_flops(tiny, plan.canvas.height, plan.canvas.width, engine.settings.vae_group)
    weights = est.weights_bytes

    # VAE encode: one frame to warm up, then `vae_frames` timed.
    reset_peak(device)
    started = time.perf_counter()
    noise = SeededNoise(engine.settings.seed, window.start)
    engine.encode(frames[:1], plan, noise)
    sync(device)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    encoded = engine.encode(frames[:vae_frames], plan, noise)
    sync(device)
    per_frame = (time.perf_counter() - started) / vae_frames
    record["encode"] = stage(per_frame, vae_frames, frames_all, warmup, encode_flops, peak)
    record["encode"] |= memory(device_peak(device), weights + est.vae_encode_bytes + est.latent_bytes)
    log(f"  encode  {record['encode']['per_unit_s'] * 1e3:8.1f} ms/frame, warm-up {warmup:.2f} s")

    repeats = -(-window.length // vae_frames)
    hint = encoded.repeat(1, 1, repeats, 1, 1)[:, :, : window.length].contiguous()
    del encoded

    # Sampling: `--steps` model calls; the first is the warm-up.
    stamps: list[float] = []

    def on_step(step: int, total: int) -> None:
        sync(device)
        stamps.append(time.perf_counter())
        log(f"  sample  call {step + 1}/{total}: {stamps[-1] - (stamps[-2] if len(stamps) > 1 else started):.2f} s")

    reset_peak(device)
    started = time.perf_counter()
    latents = engine.sample(hint, plan, window, noise, callback=on_step)
    sync(device)
    durations = np.diff([started, *stamps])
    steady = float(durations[1:].mean()) if len(durations) > 1 else float(durations[0])
    calls_full = plan.options.model_steps
    branches = plan.options.guidance_branches
    step_flops = window_step_flops(plan, window, engine.unet.config) * branches
    plan_step_flops = sum(window_step_flops(plan, w, engine.unet.config) for w in plan.windows) * branches
    forwards = len(window.chunks) * len(plan.tiles) * branches
    # Every window of the plan, every call of the full run (windows weighed by their FLOPs).
    full_calls = plan_step_flops / step_flops * calls_full
    sample = stage(steady, max(1, len(durations) - 1), full_calls, float(durations[0]), step_flops, peak)
    sample |= {"calls_full": calls_full, "forwards_per_call": forwards, "unet_forwards_per_s": forwards / steady}
    record["sample"] = sample | memory(device_peak(device), weights + est.latent_bytes + est.activation_bytes)
    log(f"  sample  {steady:.2f} s/call ({forwards} UNet forwards), {sample['tflops']:.3g} TFLOP/s, "
        f"warm-up {durations[0]:.2f} s")

    # VAE decode (with colour fix): one group to warm up, then `vae_frames` timed.
    group = engine.settings.vae_group
    reset_peak(device)
    started = time.perf_counter()
    for _ in engine.iter_decode(latents[:, :, :group], frames[:group], plan):
        pass
    sync(device)
    warm_group = time.perf_counter() - started
    started = time.perf_counter()
    for _ in engine.iter_decode(latents[:, :, :vae_frames], frames[:vae_frames], plan):
        pass
    sync(device)
    per_frame = (time.perf_counter() - started) / vae_frames
    # the warm-up unit was a whole group: its extra time is what it took beyond `group` steady frames
    warmup = warm_group - (min(group, window.length) - 1) * per_frame
    record["decode"] = stage(per_frame, vae_frames, frames_all, warmup, decode_flops // group, peak)
    record["decode"] |= memory(device_peak(device), weights + est.latent_bytes + est.vae_decode_bytes)
    log(f"  decode  {record['decode']['per_unit_s'] * 1e3:8.1f} ms/frame")
    del latents, hint

    record["total_full_s"] = text_seconds + sum(record[name]["full_s"] for name in ("encode", "sample", "decode"))
    measured_peak = max((record[s]["peak_gib"] or 0) for s in ("encode", "sample", "decode")) * GiB
    record["peak"] = memory(measured_peak if device.type == "cuda" else None, est.device_bytes)
    record["host"] = host_rss()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    log(f"  {case.name}/{policy}: full run about {record['total_full_s']:.1f} s (extrapolated)")
    return record


# -- the engine on random weights --------------------------------------------------------------


def build_engine(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, log: Log) -> tuple[StarEngine, dict]:
    """Random full-size (or tiny) models on the device; the text stage timed as the engine runs it."""
    started = time.perf_counter()
    text = TextEncoder(models.text_tower(device, dtype, tiny=args.tiny), None)
    unet = models.unet(device, dtype, tiny=args.tiny)
    unet.set_feed_forward_chunk(FEED_FORWARD_CHUNK)
    vae = VideoVAE(models.vae(device, dtype, tiny=args.tiny))
    sync(device)
    build = time.perf_counter() - started
    log(f"built random models in {build:.1f} s: UNet {sum(p.numel() for p in unet.parameters()) / 1e9:.3f} B "
        f"parameters, VAE {sum(p.numel() for p in vae.model.parameters()) / 1e6:.1f} M, text "
        f"{sum(p.numel() for p in text.model.parameters()) / 1e6:.1f} M")
    ids = torch.randint(0, text.model.config.vocab_size, (2, 77), generator=torch.Generator().manual_seed(0))
    reset_peak(device)
    started = time.perf_counter()
    context = text.encode_ids(ids)
    sync(device)
    text_seconds = time.perf_counter() - started
    text_peak = device_peak(device)
    text_record = {"seconds": text_seconds, "peak_gib": None if text_peak is None else text_peak / GiB}
    del text  # the engine frees the text tower once the prompts are encoded
    if device.type == "cuda":
        torch.cuda.empty_cache()
    settings = StarSettings(
        steps=args.steps, device=device.type, dtype=args.dtype, batch_guidance="off", vae_group=3
    )
    engine = StarEngine(unet, vae, context[:1], context[1:], settings, Placement(device, "none"), dtype)
    return engine, {"build_s": build, "text": text_record}


@contextmanager
def torch_default_kernels(engine: StarEngine) -> Iterator[None]:
    """Run `engine` as the reference runs: torch's default kernels (see the module doc)."""
    tuned = engine_module.attention_priority
    engine_module.attention_priority = lambda device: nullcontext()
    engine.unet.set_device_forms(False)
    try:
        yield
    finally:
        engine_module.attention_priority = tuned


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: fp16 on CUDA, fp32 elsewhere")
    parser.add_argument("--steps", type=int, default=3, help="model calls timed per run (the first is the warm-up)")
    parser.add_argument("--vae-frames", type=int, default=9, help="frames encoded and decoded per run (timed)")
    parser.add_argument("--cases", default="toy,1080p", help=f"comma list of {', '.join(CASES)}")
    parser.add_argument(
        "--policies", default=None, help=f"comma list of {', '.join(POLICIES)} (default: both; --tiny: ours, since the "
        "reference's 720x1280 canvas takes minutes on a CPU even with tiny models)",
    )
    parser.add_argument("--batch-guidance", choices=BATCH_GUIDANCE, default="auto", help="ours: guidance batching")
    parser.add_argument("--compile", action="store_true", help="ours: torch.compile the UNet's repeated blocks")
    parser.add_argument("--tile-size", default="default", help="ours: HxW, none, or the plan's default")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense fp16/bf16 peak, if unknown")
    parser.add_argument("--tiny", action="store_true", help="tiny models and shapes: a smoke test")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="folder for gpu_bench.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.vae_frames < 1:
        parser.error("--steps and --vae-frames must be at least 1")
    if args.policies is None:
        args.policies = "ours" if args.tiny else ",".join(POLICIES)
    for name, allowed in (("cases", CASES), ("policies", POLICIES)):
        chosen = [item.strip() for item in getattr(args, name).split(",") if item.strip()]
        if not chosen or set(chosen) - set(allowed):
            parser.error(f"--{name} takes a comma list of {', '.join(allowed)}")
        setattr(args, name, chosen)
    if args.tile_size != "default":
        args.tile_size = None if args.tile_size.lower() == "none" else parse_size(args.tile_size)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    diffusers_logging.set_verbosity_error()  # not its float32-upcast advice: these weights are random
    log = Log()
    device = torch.device(args.device)
    args.dtype = args.dtype or ("fp32" if device.type == "cpu" else "fp16")
    dtype = DTYPES[args.dtype]
    name = card_name(device)
    peak = card_peak(name, args.peak_tflops)
    if args.tiny:
        torch.set_num_threads(1)  # a smoke test on a shared CPU: more threads only wait on each other
    torch.manual_seed(0)
    config = STARConfig(**models.TINY_UNET) if args.tiny else STARConfig()
    backend = attention_backend(device, dtype, config.num_heads, config.head_dim)
    fused = fused_attention_error(device, dtype, attention_shapes(config, args.tiny))
    log(f"{name}, {args.dtype}, peak {peak or 'unknown'} TFLOP/s, attention kernel: {backend} (fused kernels "
        f"{'run' if fused is None else 'refused: ' + fused}), torch {torch.__version__}")
    calls = model_calls(SOLVER, args.steps)
    log(f"timing {calls} model call(s) per run and {args.vae_frames} VAE frames; full-run figures are extrapolated "
        f"per call to {model_calls(SOLVER, FAST_STEPS)} calls ({FAST_STEPS} 'fast' steps) and per frame")
    engine, setup = build_engine(args, device, dtype, log)
    result = {
        "card": name, "device": str(device), "dtype": args.dtype, "peak_tflops": peak, "attention": backend,
        "fused_attention_error": fused,
        "torch": torch.__version__, "steps_timed": calls, "calls_full": model_calls(SOLVER, FAST_STEPS),
        "vae_frames_timed": args.vae_frames, "extrapolated": True, **setup, "runs": [],
    }
    cases = TINY_CASES if args.tiny else CASES
    for policy in args.policies:  # every reference run before `ours`: --compile changes the shared UNet
        ours = policy == "ours"
        engine.settings = replace(
            engine.settings, batch_guidance=args.batch_guidance if ours else "off", compile=ours and args.compile
        )
        if ours:
            console = Console(stderr=True)
            engine.prepare(lambda event: console.print(event.text, highlight=False))
        for case_name in args.cases:
            try:
                text_seconds = setup["text"]["seconds"]
                with nullcontext() if ours else torch_default_kernels(engine):
                    result["runs"].append(run_policy(engine, cases[case_name], policy, args, peak, text_seconds, log))
            except Exception as error:  # noqa: BLE001 - one failed run (e.g. out of memory) must not lose the others
                log(f"{case_name}/{policy} failed: {type(error).__name__}: {error}")
                result["runs"].append({"case": case_name, "policy": policy, "error": f"{type(error).__name__}: {error}"})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    result["speedups"] = speedups(result["runs"])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_bench.json"
    path.write_text(json.dumps(result, indent=2))
    print(render_table(result), flush=True)
    log(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

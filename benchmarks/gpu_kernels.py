"""Where one UNet forward spends its time on a CUDA card, and what each exact kernel choice buys.

    python benchmarks/gpu_kernels.py [--frames 16 --height 122 --width 216 --batch 2]

One batched-guidance forward of the full-size UNet + ControlNet (random fp16 weights,
built on the device) on a frames x height x width latent (default: the toy example's
whole-frame canvas), measured in one run:

1. the card's two ceilings: a large fp16 matrix product (TFLOP/s) and a device copy (GB/s);
2. the forward under cumulative kernel variants, each timed with CUDA events (median of
   `--repeats` after a warm-up) and compared with the first variant's output (max |diff|):
   torch's defaults (what the reference runs), + the engine's SDPA order
   (`attention_priority`), + `device_forms` (video GroupNorm statistics by reductions,
   temporal convolutions as GEMMs, memory-efficient attention for the temporal
   attentions' short sequences: the engine's default), + `--compile` (regional; its
   warm-up is the compilation and is not timed; `--no-compile` leaves it out);
3. torch.profiler's device time of one forward by kernel class (attention, GEMM,
   convolution, normalisation, elementwise, copies), by kernel (full names) and by the
   torch op that launched it, for the defaults and the engine;
4. the parts behind the differences alone: SDPA kernels on the top-level spatial
   and temporal attention shapes; GroupNorm and the 3x1x1 convolution, torch's against `device_forms`',
   on the top-level video; and candidates for the next change: the spatial transformers'
   moves between frames and tokens as matrix products on the layouts as they lie, and the
   VAE decoder in channels-last memory format.

Measured choices left out of the engine (benchmarks/gpu_kernels.py of 2026-11-26 on an
H200, forward speed-up over the engine then): cuDNN autotuning x1.00, channels-last 2-D
convolutions x0.95, unsliced feed-forwards x1.01 (at the cost of the memory bound), one
launch per temporal attention x1.01. On an H100 (same day): the memory-bound steps between
the layers (LIEM + LayerNorm, GroupNorm + SiLU, GEGLU, residual adds, layout moves) as
small torch.compile'd functions with dynamic shapes, about x1.04 for ~95 s of compilation
on a cold cache: their dynamic-shape Triton kernels ran far below the card's bandwidth.

Writes gpu_kernels.json and the profiler tables to --out ($OUT). Needs no weights file.
`--tiny --device cpu` runs the same steps on tiny shapes (host clock, CPU profile): the smoke
test that keeps this script runnable on the one GPU call a session may get.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).parent))
import _models as models  # noqa: E402
from _card import card_name, card_peak  # noqa: E402
from flops import forward_flops  # noqa: E402

from star_cli.families.i2vgenxl.engine import FEED_FORWARD_CHUNK  # noqa: E402
from star_cli.models.attention import MAX_BATCH_HEADS  # noqa: E402
from star_cli.models.device_forms import group_norm_by_reductions, temporal_conv_as_matmuls  # noqa: E402
from star_cli.pipeline.engines.compiling import compile_repeated_blocks  # noqa: E402
from star_cli.pipeline.engines.speedups import attention_priority  # noqa: E402

# Kernel classes for the profile, matched in order against the kernel's name (cuDNN's
# convolutions are implicit GEMMs: they are matched before plain GEMMs).
KERNEL_CLASSES = (
    ("attention", r"flash|fmha|attention|sdpa"),
    ("convolution", r"conv|fprop|implicit|winograd|dgrad|wgrad"),
    ("layout", r"nchwtonhwc|nhwctonchw|transpose"),
    ("gemm", r"gemm|nvjet|xmma|cutlass|matmul|addmm|\bmm\b"),
    ("normalisation", r"norm|welford|moments"),
    ("reduction", r"reduce|amax|mean"),
    ("copy", r"copy|permute|cat|contiguous"),
    ("elementwise", r"elementwise|vectorized|unrolled|silu|gelu|sigmoid|mul|add"),
)


def timed_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    """Median milliseconds of `fn` over `repeats` runs after one warm-up (CUDA events on a GPU), and its result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            result = fn()
            times.append((time.perf_counter() - began) * 1e3)
    return sorted(times)[len(times) // 2], result


def ceilings(device: torch.device, dtype: torch.dtype, tiny: bool) -> dict[str, float]:
    """A large GEMM (random data) and a 2 GiB device copy (smaller when tiny): the card as measured now."""
    n = 512 if tiny else 8192
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    ms, _ = timed_ms(lambda: a @ b, 10, device)
    src = torch.randn((1 << 20) if tiny else (1 << 30), device=device, dtype=dtype)
    dst = torch.empty_like(src)
    copy_ms, _ = timed_ms(lambda: dst.copy_(src), 10, device)
    return {"gemm_tflops": 2 * n**3 / ms / 1e9, "copy_gbs": 2 * src.numel() * src.element_size() / copy_ms / 1e6}


@contextmanager
def variant(unet: torch.nn.Module, device: torch.device, name: str, compile_backend: str) -> Iterator[None]:
    """The kernel choices of variant `name`: each adds one choice to the one before (see the module doc)."""
    steps = VARIANTS.index(name)
    unet.set_device_forms(steps >= 2)
    if name == "+ compile (regional)":  # last: compiling cannot be undone on these modules
        compile_repeated_blocks(unet, backend=compile_backend)
    with attention_priority(device) if steps >= 1 else nullcontext():
        yield


VARIANTS = (
    "torch defaults",
    "+ attention order",
    "+ device forms (engine)",
    "+ compile (regional)",
)
PROFILED = (VARIANTS[0], VARIANTS[2])


def classify(name: str) -> str:
    lowered = name.lower()
    return next((label for label, pattern in KERNEL_CLASSES if re.search(pattern, lowered)), "other")


def profile_forward(forward: Callable[[], object], device: torch.device, out: Path, label: str) -> dict[str, object]:
    """One forward's time by kernel class, by kernel and by torch op (device time on a GPU, CPU time on a CPU).

    Kernels are recorded with their full names and the ops that launched them (their
    device time), so the next change can aim at an op, not a truncated kernel name. The
    table goes to `out` too.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        forward()
        if cuda:
            torch.cuda.synchronize(device)
    averages = prof.key_averages()
    if not cuda:
        key = "self_cpu_time_total"
    elif hasattr(averages[0], "self_device_time_total"):
        key = "self_device_time_total"
    else:
        key = "self_cuda_time_total"
    total = "device_time_total" if hasattr(averages[0], "device_time_total") else "cuda_time_total"
    classes: dict[str, float] = {}
    kernels, ops = [], []
    for event in averages:
        micros = getattr(event, key, 0) or 0
        op = event.key.startswith("aten::")
        if op:
            launched = (getattr(event, total, 0) or 0) if cuda else micros
            ops.append({"op": event.key, "calls": event.count, "ms": launched / 1e3})
        # On a GPU the kernels carry the time (a CPU-side range, such as a compiled kernel's launcher,
        # repeats its kernel's; "Command Buffer Full" marks a stalled launch queue); on a CPU the ops do.
        host_range = cuda and (op or event.device_type == DeviceType.CPU or event.key == "Command Buffer Full")
        if micros and not host_range:
            classes[classify(event.key)] = classes.get(classify(event.key), 0.0) + micros / 1e3
            kernels.append({"kernel": event.key, "calls": event.count, "ms": micros / 1e3})
    table = averages.table(sort_by=key, row_limit=40)
    (out / f"profile_{re.sub(r'[^a-z]+', '_', label.lower()).strip('_')}.txt").write_text(table)
    top = sorted(ops, key=lambda row: -row["ms"])[:12]
    print(f"profile, {label}: ops by time\n" + "\n".join(f"  {r['op']:<40} {r['calls']:6d} calls {r['ms']:9.1f} ms" for r in top), flush=True)
    return {
        "classes": dict(sorted(classes.items(), key=lambda kv: -kv[1])),
        "kernels": sorted(kernels, key=lambda row: -row["ms"])[:60],
        "ops": sorted(ops, key=lambda row: -row["ms"])[:60],
    }


def sdpa_backends(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int, int]) -> dict[str, object]:
    """Each SDPA kernel on one (batch, heads, tokens, head_dim) self-attention: ms and TFLOP/s, or why not."""
    batch, heads, tokens, head_dim = shape
    q, k, v = (torch.randn(shape, device=device, dtype=dtype) for _ in range(3))
    flop = 4 * batch * heads * tokens * tokens * head_dim
    results: dict[str, object] = {}
    reference = None
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        try:
            with sdpa_kernel(backend):
                ms, out = timed_ms(lambda: F.scaled_dot_product_attention(q, k, v), 3, device)
        except RuntimeError as error:
            results[backend.name] = f"refused: {str(error).splitlines()[0][:120]}"
            continue
        reference = out if reference is None else reference
        results[backend.name] = {"ms": ms, "tflops": flop / ms / 1e9, "max_diff": (out - reference).abs().max().item()}
    return results


def video_layers(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int, int, int]) -> dict:
    """GroupNorm and the 3x1x1 convolution on one (B, C, F, H, W) video: torch's layers against `device_forms`."""
    batch, channels, frames, height, width = shape
    conv = torch.nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)).to(device, dtype)
    norm = torch.nn.GroupNorm(32, channels).to(device, dtype)
    video = torch.randn(shape, device=device, dtype=dtype) + 1.0
    flop = 2 * 3 * channels * channels * batch * frames * height * width
    results = {}
    with torch.no_grad():
        for label, fn in (
            ("group_norm torch", lambda: norm(video)),
            ("group_norm by reductions", lambda: group_norm_by_reductions(norm, video)),
            ("conv3d torch", lambda: conv(video)),
            ("conv3d as matmuls", lambda: temporal_conv_as_matmuls(conv, video)),
        ):
            ms, _ = timed_ms(fn, 5, device)
            results[label] = {"ms": ms} | ({"tflops": flop / ms / 1e9} if "conv" in label else {})
        results["group_norm max_diff"] = (group_norm_by_reductions(norm, video) - norm(video)).abs().max().item()
        results["conv max_diff"] = (temporal_conv_as_matmuls(conv, video) - conv(video)).abs().max().item()
    return results


def token_moves(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int, int, int]) -> dict:
    """The transformers' moves between frames (N, C, H, W) and tokens (N, H*W, C), on one top-level
    video: as the UNet does them (a permute copy, a strided residual add) against matrix products
    that read and write the layouts directly. For the next change: ms of each and max |diff|."""
    batch, channels, frames, height, width = shape
    n, pixels = batch * frames, height * width
    frames_in, normed = (torch.randn(n, channels, height, width, device=device, dtype=dtype) for _ in range(2))
    tokens = torch.randn(n, pixels, channels, device=device, dtype=dtype)
    weight = torch.randn(channels, channels, device=device, dtype=dtype) / channels**0.5
    bias = torch.randn(channels, device=device, dtype=dtype)
    pairs = {
        "in": (lambda: F.linear(normed.permute(0, 2, 3, 1).reshape(n, pixels, channels), weight, bias),
               lambda: torch.baddbmm(bias, normed.view(n, channels, pixels).transpose(1, 2), weight.t().expand(n, -1, -1))),
        "out": (lambda: frames_in + F.linear(tokens, weight, bias).view(n, height, width, channels).permute(0, 3, 1, 2),
                lambda: torch.baddbmm(frames_in.view(n, channels, pixels), weight.expand(n, -1, -1), tokens.transpose(1, 2))
                .add_(bias[:, None]).view(n, channels, height, width)),
    }
    results: dict[str, object] = {}
    with torch.no_grad():
        for name, (as_now, direct) in pairs.items():
            now_ms, expected = timed_ms(as_now, 5, device)
            direct_ms, got = timed_ms(direct, 5, device)
            results[name] = {"now_ms": now_ms, "direct_ms": direct_ms, "max_diff": (got.float() - expected.float()).abs().max().item()}
    return results


def vae_decode_formats(device: torch.device, dtype: torch.dtype, frames: int, height: int, width: int, tiny: bool) -> dict:
    """One group of `frames` latents through the temporal VAE's decoder (random SVD-size weights) in
    torch's default memory format and in channels-last: decoding is about a tenth of a run and
    runs at 7-10% MFU, mostly 2-D convolutions, which cuDNN reorders to channels-last and back."""
    vae = models.vae(device, dtype, tiny=tiny)
    latent = torch.randn(frames, 4, height, width, device=device, dtype=dtype)
    with torch.no_grad():
        default_ms, expected = timed_ms(lambda: vae.decode(latent, num_frames=frames).sample, 3, device)
        for conv in (module for module in vae.modules() if isinstance(module, torch.nn.Conv2d)):  # 2-D only
            conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
        last = latent.contiguous(memory_format=torch.channels_last)
        last_ms, got = timed_ms(lambda: vae.decode(last, num_frames=frames).sample, 3, device)
    return {"default_ms": default_ms, "channels_last_ms": last_ms, "max_diff": (got.float() - expected.float()).abs().max().item()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=122, help="latent rows (toy canvas: 122)")
    parser.add_argument("--width", type=int, default=216, help="latent columns (toy canvas: 216)")
    parser.add_argument("--batch", type=int, default=2, help="2: both guidance branches in one batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--tiny", action="store_true", help="tiny model and shapes: a smoke test (CPU)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor; eager when --tiny)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the regional --compile variant (~150 s on an H200)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args(argv)
    if args.tiny:
        args.frames, args.height, args.width = 3, 10, 8
    args.compile_backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    return args


def time_variants(unet: torch.nn.Module, device: torch.device, dtype: torch.dtype, args: argparse.Namespace, peak: float | None, log: Callable[[str], None]) -> dict:
    """One batched forward under every variant of `VARIANTS`: time, TFLOP/s, MFU, speed-up, max |diff|."""
    shape = (args.batch, 4, args.frames, args.height, args.width)
    x, hint = (torch.randn(shape, device=device, dtype=dtype) for _ in range(2))
    y = torch.randn(args.batch, 77, unet.config.context_dim, device=device, dtype=dtype)
    t = torch.full((args.batch,), 899, device=device)
    flop = forward_flops(args.frames, args.height, args.width, unet.config) * args.batch

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return unet(x, t, y, hint)

    rows: list[dict] = []
    profiles: dict[str, dict[str, object]] = {}
    baseline = None
    for label in VARIANTS[:-1] if args.no_compile else VARIANTS:
        try:
            started = time.perf_counter()
            with variant(unet, device, label, args.compile_backend):
                ms, out = timed_ms(forward, args.repeats, device)
                if label in PROFILED:
                    profiles[label] = profile_forward(forward, device, args.out, label)
        except RuntimeError as error:
            rows.append({"variant": label, "error": str(error).splitlines()[0][:160]})
            log(f"{label:<30} failed: {rows[-1]['error']}")
            continue
        baseline = out if baseline is None else baseline
        tflops = flop / ms / 1e9
        row = {"variant": label, "ms": ms, "tflops": tflops, "mfu": tflops / peak if peak else None,
               "max_diff": (out.float() - baseline.float()).abs().max().item(), "speedup": rows[0]["ms"] / ms if rows else 1.0,
               "output_abs_max": out.float().abs().max().item(),  # a zero output would make max_diff say nothing
               "seconds": time.perf_counter() - started}  # warm-up (compilation) and any profile included
        rows.append(row)
        log(f"{label:<30} {ms:9.1f} ms  {tflops:7.2f} TFLOP/s  MFU {row['mfu'] or 0:6.1%}  x{row['speedup']:.3f}  "
            f"max|diff| {row['max_diff']:.2e}  ({row['seconds']:.0f} s with warm-up)")
    for label, profiled in profiles.items():
        log(f"by class, {label}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in profiled["classes"].items()))
    return {"tflop": flop / 1e12, "variants": rows, "profile": profiles}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    name = card_name(device)
    peak = card_peak(name, args.peak_tflops)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    result: dict = {"card": name, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                    "args": {k: str(v) for k, v in vars(args).items()}}
    result["ceilings"] = ceilings(device, dtype, args.tiny)
    log(f"{name}, torch {torch.__version__}, cuDNN {result['cudnn']}: GEMM {result['ceilings']['gemm_tflops']:.1f} "
        f"TFLOP/s, copy {result['ceilings']['copy_gbs']:.0f} GB/s")
    torch.manual_seed(0)
    unet = models.unet(device, dtype, tiny=args.tiny)
    unet.set_feed_forward_chunk(FEED_FORWARD_CHUNK)
    config = unet.config
    result["forward"] = time_variants(unet, device, dtype, args, peak, log)
    del unet
    if device.type == "cuda":
        torch.cuda.empty_cache()
    spatial = (args.batch * args.frames, config.dim // config.head_dim, args.height * args.width, config.head_dim)
    result["sdpa_spatial"] = sdpa_backends(device, dtype, spatial)
    log(f"SDPA {spatial}: {json.dumps(result['sdpa_spatial'])}")
    heads = spatial[1]  # one launch of the top-level temporal attention, as `multi_head_attention` splits it
    temporal = (min(args.batch * args.height * args.width, MAX_BATCH_HEADS // heads), heads, args.frames, config.head_dim)
    result["sdpa_temporal"] = sdpa_backends(device, dtype, temporal)
    log(f"SDPA {temporal}: {json.dumps(result['sdpa_temporal'])}")
    result["video_layers"] = video_layers(device, dtype, (args.batch, config.dim, args.frames, args.height, args.width))
    log(f"video layers, top level: {json.dumps(result['video_layers'])}")
    result["token_moves"] = token_moves(device, dtype, (args.batch, config.dim, args.frames, args.height, args.width))
    log(f"token moves, top level: {json.dumps(result['token_moves'])}")
    result["vae_decode"] = vae_decode_formats(device, dtype, 3, args.height, args.width, args.tiny)
    log(f"VAE decode, 3 frames: {json.dumps(result['vae_decode'])}")
    result["seconds"] = time.perf_counter() - started
    (args.out / "gpu_kernels.json").write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out / 'gpu_kernels.json'}")
    return result


if __name__ == "__main__":
    main()

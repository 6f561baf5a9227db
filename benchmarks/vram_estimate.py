"""Peak accelerator memory of the full-size STAR pipeline for a plan, measured without a GPU.

Every stage of `star_cli.families.i2vgenxl.engine.StarEngine` runs at the plan's real shapes
on meta tensors (no data, no weights) under the dispatch-level tracker of `_tracker.py`,
the methodology of the reference's MEASUREMENTS.md (live storage bytes, attention as a
memory-efficient kernel). A stage's peak is

    weights resident on the device in that stage (per offload mode)
  + the most bytes the stage itself holds at once (activations, latents, frames)

and the pipeline's peak is the largest stage:
- text: the CLIP text tower encoding both prompts;
- encode: `StarEngine.encode` of the largest window (resize, pad, VAE encode per frame);
- sample: `sample_window` over the largest window with a stand-in UNet that records
  what is live at each call; at each call the UNet's own peak for that region (chunk x
  tile, measured once per shape) is added. The Brownian tree's draws are made without
  a generator (meta has none): the same tensors, no values;
- decode: `StarEngine.decode` of the first two frame groups (every group costs the
  same), with the window's hint and sampled latents alive, as in `StarEngine.restore`.
Resident weights: `none` all models the stage may touch (the engine frees the text
encoder after encoding); `model` the working model only; `sequential` the UNet streamed
by accelerate's `cpu_offload`, which loads one module's own tensors at a time.

The reference's policy (PlanOptions.reference(): 720x1280 white canvas, chunks of 32
with 16 overlap, the last up to 40, no tiles) is modelled on its `VideoToVideo_sr.test`:
UNet fp16, text encoder and VAE fp32, all resident; the padded video at target size
(fp32) on the device from encoding on; decoded frames gathered on the device and
concatenated at the end. Its decode runs under autocast, measured here in fp32 (an upper
bound). Not modelled anywhere: the caching allocator's slack (typically 5-15%).

Printed: the UNet's activation peak against the reference's measurements; the UNet's
peak by feed-forward chunk; how the frames held at once (the largest window) grow with
video length; the sampler's own state; then per-stage peaks (GiB, weights included) for
the reference and for our defaults under each offload mode, with ratios to the targets
(GiB: a "24 GB" card holds 24 GiB; the reference's published figure is taken as GB).

    python benchmarks/vram_estimate.py [--frames 72 --long-frames 720 --height 240 --width 426]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from transformers import CLIPTextModel

sys.path.insert(0, str(Path(__file__).parent))
import _models as full_size  # noqa: E402
from _tracker import GiB, MemoryTracker, largest_direct_bytes, module_bytes, track_memory  # noqa: E402

from star_cli.diffusion.noise import SeededNoise  # noqa: E402
from star_cli.diffusion.window import sample_window  # noqa: E402
from star_cli.models import STARUNet  # noqa: E402
from star_cli.models.vae import VideoVAE  # noqa: E402
from star_cli.pipeline.engines.placement import Placement  # noqa: E402
from star_cli.families.i2vgenxl.engine import StarEngine, window_regions  # noqa: E402
from star_cli.pipeline.plan import Plan, PlanOptions, Window, make_plan  # noqa: E402
from star_cli.pipeline.request import StarSettings  # noqa: E402

META = torch.device("meta")
FP16, FP32 = torch.float16, torch.float32
TARGETS_GIB = {"none": 20.0, "model": 12.0, "sequential": 8.0}
REFERENCE_PUBLISHED_GB = 39.0
# MEASUREMENTS.md: the reference UNet's activation peak (GiB), fp16, batch 1.
REFERENCE_UNET_GIB = {(32, 122, 216): 19.21, (32, 90, 160): 10.51, (16, 122, 216): 9.60, (8, 122, 216): 4.80}
LATENT_CHANNELS = 4


# -- full-size models on meta ------------------------------------------------------------


@cache
def unet(ff_chunk: int | None) -> STARUNet:
    model = full_size.unet(META, FP16)
    model.set_feed_forward_chunk(ff_chunk)
    return model


@cache
def vae(dtype: torch.dtype) -> VideoVAE:
    return VideoVAE(full_size.vae(META, dtype))


@cache
def text(dtype: torch.dtype) -> CLIPTextModel:
    return full_size.text_tower(META, dtype)


def meta_engine(unet_model: Callable[..., torch.Tensor] | None = None) -> StarEngine:
    """A StarEngine over the meta models (or a stand-in UNet), as `StarEngine.load` builds it, fp16."""
    context = torch.zeros(1, 77, full_size.OPENCLIP_H_TEXT["hidden_size"], dtype=FP16, device=META)
    return StarEngine(
        unet=unet(None) if unet_model is None else unet_model,
        vae=vae(FP16),
        context=context,
        negative_context=context.clone(),
        settings=StarSettings(),
        placement=Placement(META, "none"),
        dtype=FP16,
    )


# -- stage probes (bytes the stage adds on top of resident weights) -------------------------


@cache
def unet_peak(ff_chunk: int | None, frames: int, height: int, width: int) -> tuple[int, str]:
    """One UNet forward, batch 1, fp16: peak bytes and where it happens."""
    model = unet(ff_chunk)
    shape = (1, LATENT_CHANNELS, frames, height, width)
    x, hint = torch.empty(shape, dtype=FP16, device=META), torch.empty(shape, dtype=FP16, device=META)
    y = torch.empty(1, 77, model.config.context_dim, dtype=FP16, device=META)
    t = torch.zeros(1, dtype=torch.long, device=META)
    with track_memory(model) as tracker:
        model(x, t, y, hint)
    peak = tracker.peak
    return peak.bytes, f"{peak.module} {peak.op.removeprefix('aten.')} {peak.shape}"


def text_peak(dtype: torch.dtype) -> int:
    """Both prompts through the text tower, as `TextEncoder.contexts` runs it."""
    model = text(dtype)
    with track_memory() as tracker:
        model(input_ids=torch.zeros(2, 77, dtype=torch.long, device=META), output_hidden_states=True)
    return tracker.peak.bytes


def source_frames(plan: Plan, count: int) -> np.ndarray:
    height, width = plan.input_size
    return np.zeros((count, height, width, 3), dtype=np.uint8)


def encode_peak(plan: Plan, window: Window) -> int:
    """`StarEngine.encode` of a whole window: per-frame resize, pad and VAE encode."""
    engine = meta_engine()
    with track_memory(engine.vae.model) as tracker:
        engine.encode(source_frames(plan, window.length), plan, SeededNoise(0, window.start))
    return tracker.peak.bytes


def window_latent(plan: Plan, window: Window) -> torch.Tensor:
    """A window's latent as the sampler holds it: (1, C, frames, h, w) float32."""
    shape = (1, LATENT_CHANNELS, window.length, plan.canvas.latent_height, plan.canvas.latent_width)
    return torch.zeros(shape, dtype=FP32, device=META)


def decode_peak(plan: Plan, window: Window, groups: int = 2) -> int:
    """`StarEngine.decode` of the first `groups` frame groups: every group costs the same."""
    engine = meta_engine()
    count = min(window.length, groups * engine.settings.vae_group)
    with track_memory(engine.vae.model) as tracker:
        hint = window_latent(plan, window)  # StarEngine.restore still holds it while decoding
        latents = window_latent(plan, window)
        for _ in engine.iter_decode(latents[:, :, :count], source_frames(plan, count), plan):
            pass
        del hint
    return tracker.peak.bytes


class UNetStandIn:
    """Takes the UNet's place in the sampler: records what is live at each call, returns a v."""

    def __init__(self) -> None:
        self.tracker: MemoryTracker | None = None
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.tracker.live, tuple(x.shape)))
        return torch.zeros_like(x)


def _unseeded_randn(size, dtype, device, seed):
    """torchsde seeds a generator per tree node; meta has neither generators nor values."""
    return torch.empty(size, dtype=dtype, device=device)


@dataclass(frozen=True)
class SamplerRun:
    """The sampler over one window: its own peak, and what was live at each UNet call (with the input shape)."""

    peak: int
    calls: tuple[tuple[int, tuple[int, ...]], ...]


@cache
def run_sampler(plan: Plan, eta: float = 1.0) -> SamplerRun:
    """`sample_window` over the plan's largest window, the UNet replaced by `UNetStandIn`."""
    window = largest_window(plan)
    stand_in = UNetStandIn()
    engine = meta_engine(stand_in)
    settings = replace(engine.sampler_settings(), eta=eta)
    with mock.patch("torchsde._brownian.brownian_interval._randn", _unseeded_randn), track_memory() as tracker:
        stand_in.tracker = tracker
        hint = window_latent(plan, window)
        regions = window_regions(plan, window)
        sample_window(engine.denoise, hint, engine.context, engine.negative_context, regions, settings, seed=0)
    return SamplerRun(tracker.peak.bytes, tuple(sorted(set(stand_in.calls))))


@dataclass(frozen=True)
class StageWork:
    """Bytes each stage adds to the resident weights, for one plan (the UNet's part apart)."""

    text: int
    encode: int
    decode: int
    sampler: SamplerRun
    sampler_without_tree: int  # the same run with eta = 0: no Brownian tree


@cache
def stage_work(plan: Plan) -> StageWork:
    window = largest_window(plan)
    return StageWork(
        text=text_peak(FP16),
        encode=encode_peak(plan, window),
        decode=decode_peak(plan, window),
        sampler=run_sampler(plan),
        sampler_without_tree=run_sampler(plan, eta=0.0).peak,
    )


def sample_peak(run: SamplerRun, ff_chunk: int | None) -> tuple[int, str]:
    """The sampling stage: the sampler's own peak, or what is live at a UNet call plus the UNet's peak."""
    best, where = run.peak, "sampler state"
    for live, shape in run.calls:
        batch, _, frames, height, width = shape
        activation, place = unet_peak(ff_chunk, frames, height, width)
        if live + batch * activation > best:
            best, where = live + batch * activation, f"{frames}x{height}x{width}: {place}"
    return best, where


# -- whole pipeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelinePeak:
    label: str
    stages: dict[str, float]  # GiB per stage, weights included
    where: str

    @property
    def peak(self) -> float:
        return max(self.stages.values())


def largest_window(plan: Plan) -> Window:
    return max(plan.windows, key=lambda w: w.length)


def ours(plan: Plan, ff_chunk: int | None) -> list[PipelinePeak]:
    """Our engine's peak per offload mode (the work is the same; resident weights differ)."""
    model, work = unet(ff_chunk), stage_work(plan)
    sample, where = sample_peak(work.sampler, ff_chunk)
    w_unet, w_vae, w_text = module_bytes(model), module_bytes(vae(FP16).model), module_bytes(text(FP16))
    resident = {
        "none": (w_text, w_unet + w_vae, w_unet + w_vae),
        "model": (w_text, w_vae, w_unet),
        "sequential": (w_text, w_vae, largest_direct_bytes(model)),
    }
    rows = []
    for mode, (on_text, on_vae, on_sample) in resident.items():
        stages = {
            "text": on_text + work.text,
            "encode": on_vae + work.encode,
            "sample": on_sample + sample,
            "decode": on_vae + work.decode,
        }
        rows.append(PipelinePeak(f"{mode} {plan.num_frames}f", {k: v / GiB for k, v in stages.items()}, where))
    return rows


def reference(plan: Plan) -> PipelinePeak:
    """The reference's `VideoToVideo_sr.test` on this plan (see the module doc)."""
    window = largest_window(plan)  # no window limit: the whole video
    canvas = plan.canvas.height * plan.canvas.width
    weights = module_bytes(unet(None)) + module_bytes(vae(FP32).model) + module_bytes(text(FP32))
    video = window.length * 3 * canvas * 4  # padded frames at target size, fp32, on the device
    latents = window.length * LATENT_CHANNELS * canvas // 64 * 4
    with track_memory() as tracker:
        vae(FP32).encode(torch.empty(1, 3, plan.canvas.height, plan.canvas.width, device=META))
    encode = tracker.peak.bytes
    group = torch.empty(3, LATENT_CHANNELS, plan.canvas.latent_height, plan.canvas.latent_width, device=META)
    with track_memory() as tracker:
        next(vae(FP32).iter_decode(group, tile=None))
    gathered = (window.length - 3) * 3 * canvas * 2  # decoded frames so far (fp16 under autocast)
    decode = max(gathered + tracker.peak.bytes, 2 * window.length * 3 * canvas * 2)  # ... and their torch.cat
    sample, where = sample_peak(run_sampler(plan), None)
    stages = {
        "text": weights + text_peak(FP32),
        "encode": weights + video + latents + encode,
        "sample": weights + video + sample,
        "decode": weights + video + 2 * latents + decode,
    }
    return PipelinePeak("reference", {k: v / GiB for k, v in stages.items()}, where)


# -- report --------------------------------------------------------------------------------


def calibration() -> None:
    print("UNet activation peak, fp16, batch 1 (ours on meta vs the reference's MEASUREMENTS.md):")
    for shape, ref in REFERENCE_UNET_GIB.items():
        peak, where = unet_peak(None, *shape)
        print(f"  {'x'.join(map(str, shape)):<12} ours {peak / GiB:6.2f} GiB  reference {ref:6.2f}  ratio "
              f"{peak / GiB / ref:.3f}  at {where}", flush=True)


def feed_forward_sweep(shapes: list[tuple[int, int, int]], chunks: list[int | None]) -> None:
    print("UNet activation peak (GiB) by feed-forward chunk (tokens):")
    print("  " + "frames x h x w".ljust(16) + "".join(f"{str(c):>9}" for c in chunks))
    for shape in shapes:
        row = "".join(f"{unet_peak(c, *shape)[0] / GiB:9.2f}" for c in chunks)
        print("  " + "x".join(map(str, shape)).ljust(16) + row, flush=True)


def print_table(title: str, rows: list[PipelinePeak]) -> None:
    print(title)
    print(f"  {'policy':<18}{'text':>7}{'encode':>8}{'sample':>8}{'decode':>8}{'peak':>8}{'target':>8}{'ratio':>7}")
    for row in rows:
        mode = row.label.split()[0]
        if mode == "reference":
            target, ratio = f"{REFERENCE_PUBLISHED_GB:g} GB", row.peak * GiB / 1e9 / REFERENCE_PUBLISHED_GB
        else:
            target, ratio = f"{TARGETS_GIB[mode]:g}", row.peak / TARGETS_GIB[mode]
        widths = {"text": 7, "encode": 8, "sample": 8, "decode": 8}
        stages = "".join(f"{row.stages[k]:{w}.2f}" for k, w in widths.items())
        print(f"  {row.label:<18}{stages}{row.peak:8.2f}{target:>8}{ratio:7.2f}")
    for where in dict.fromkeys(row.where for row in rows):
        print(f"  sampling peaks at {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=72)
    parser.add_argument("--long-frames", type=int, default=720)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=426)
    parser.add_argument("--ff-chunk", type=int, default=32768, help="feed-forward chunk (tokens) to compare with none")
    args = parser.parse_args()
    torch.set_num_threads(1)

    calibration()
    plans = [make_plan(n, args.height, args.width, PlanOptions()) for n in (args.frames, args.long_frames)]
    region_shapes = sorted({shape for p in plans for shape in p.region_counts})
    sweep_shapes = [region_shapes[-1], (32, 90, 160), (32, 122, 216)]  # ours, the largest default tile, untiled
    feed_forward_sweep(sweep_shapes, [None, 131072, 65536, args.ff_chunk, 16384])
    lengths = (args.frames, args.long_frames, 10 * args.long_frames, 100 * args.long_frames)
    windows = [largest_window(make_plan(n, args.height, args.width, PlanOptions())).length for n in lengths]
    print("largest window (the frames held at once) by video length: "
          + ", ".join(f"{n} -> {w}" for n, w in zip(lengths, windows)), flush=True)
    for plan in plans:
        work = stage_work(plan)
        latent = window_latent(plan, largest_window(plan)).nbytes
        at_calls = max(live for live, _ in work.sampler.calls)
        print(f"sampler, {plan.num_frames} frames: own peak {work.sampler.peak / GiB:.2f} GiB, at the UNet calls "
              f"{at_calls / GiB:.2f} GiB = {at_calls / latent:.1f} window latents; without the Brownian tree "
              f"(eta = 0) {work.sampler_without_tree / GiB:.2f} GiB", flush=True)

    ref = reference(make_plan(args.frames, args.height, args.width, PlanOptions.reference()))
    for ff in (None, args.ff_chunk):
        rows = ([ref] if ff is None else []) + [row for plan in plans for row in ours(plan, ff)]
        print_table(f"Peak device memory (GiB), {args.width}x{args.height} x4, feed-forward chunk {ff}:", rows)


if __name__ == "__main__":
    main()

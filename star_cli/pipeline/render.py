"""`star upscale --dry-run`: a plan and its estimate as rich tables (sizes shown width x height)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from rich.console import Group
from rich.table import Table

from star_cli.pipeline.estimate import GiB, HOST_RUNTIME_BYTES, Estimate, cpu_only_bytes, estimate
from star_cli.pipeline.plan import VAE_FACTOR, Chunk, Plan, PlanOptions, make_plan

MAX_WINDOW_ROWS = 12


def _size(height: int, width: int) -> str:
    return f"{width}x{height}"


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def _overlaps(spans: Sequence[tuple[int, int]]) -> list[int]:
    return [a_end - b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]) if b_start < a_end]


def _range_text(lo: int, hi: int, unit: str = "") -> str:
    return f"{lo}{unit}" if lo == hi else f"{lo}-{hi}{unit}"


def _canvas_text(plan: Plan) -> str:
    c, p = plan.canvas, plan.canvas.padding
    named = (("top", p.top), ("bottom", p.bottom), ("left", p.left), ("right", p.right))
    sides = [f"{name} {n}" for name, n in named if n]
    fill = "edge replicate" if p.mode == "replicate" else f"constant {p.value:g}"
    pad = f"pad {', '.join(sides)} ({fill})" if sides else "no padding"
    return f"{_size(c.height, c.width)} px (latent {_size(c.latent_height, c.latent_width)}), {pad}"


def _chunks_text(plan: Plan) -> str:
    chunks = plan.chunks
    lengths = [c.length for c in chunks]
    overlaps = [n for w in plan.windows for n in _overlaps([(c.start, c.end) for c in w.chunks])]
    text = f"{len(chunks)} of {_range_text(min(lengths), max(lengths))} frames"
    if overlaps:
        text += f", overlap {_range_text(min(overlaps), max(overlaps))}"
    return f"{text}, {plan.options.blend} join"


def _tiles_text(plan: Plan) -> str:
    tiles = plan.tiles
    if len(tiles) == 1:
        return "none (whole canvas in one pass)"
    rows = sorted({(t.top, t.top + t.height) for t in tiles})
    cols = sorted({(t.left, t.left + t.width) for t in tiles})
    t = tiles[0]
    overlap = min(_overlaps(rows) + _overlaps(cols)) * VAE_FACTOR
    return (
        f"{len(tiles)} ({len(cols)}x{len(rows)}) of {_size(t.height * VAE_FACTOR, t.width * VAE_FACTOR)} px, "
        f"overlap >= {overlap} px, {plan.options.tile_blend} feather"
    )


def _plan_table(plan: Plan, est: Estimate, source: str | os.PathLike | None, engine: str, device: str | None) -> Table:
    o = plan.options
    table = Table(title="Upscale plan", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    if source is not None:
        table.add_row("Source", os.fspath(source))
    table.add_row("Input", f"{_size(*plan.input_size)}, {plan.num_frames} frames")
    table.add_row("Output", f"{_size(*plan.output_size)} (x{o.scale:g})")
    table.add_row("Engine", engine)
    if engine != "star":
        return table
    table.add_row("Canvas", _canvas_text(plan))
    cuts = f"scene cuts at {', '.join(map(str, plan.scene_cuts))}" if plan.scene_cuts else "no scene cuts"
    table.add_row("Shots", f"{len(plan.shots)} ({cuts})")
    table.add_row("Chunks", _chunks_text(plan))
    lengths = [w.length for w in plan.windows]
    per = "all chunks of a shot" if o.window_chunks is None else f"up to {o.window_chunks} chunks"
    table.add_row("Windows", f"{len(plan.windows)} of up to {max(lengths)} frames ({per}), {o.blend} cross-fade")
    table.add_row("Tiles", _tiles_text(plan))
    table.add_row(
        "UNet evaluations",
        f"{plan.unet_evaluations} ({len(plan.chunks)} chunks x {len(plan.tiles)} tiles x "
        f"{o.model_steps} steps x {o.guidance_branches} branches)",
    )
    table.add_row("Pixel-frames", f"processed / output = {plan.work_ratio:.2f}")
    per_frame = est.flops_per_output_frame / 1e12
    table.add_row(
        "Compute",
        f"{est.flops / 1e15:.1f} PFLOP ({per_frame:.0f} TFLOP per output frame, "
        f"{est.flops_per_output_frame / _reference_flops_per_frame(plan):.2f} of the reference's policy)",
    )
    table.add_row(
        "GPU memory",
        f"about {_gib(est.device_bytes)} (weights {_gib(est.weights_bytes)}, UNet activations "
        f"{_gib(est.activation_bytes)}, VAE decode {_gib(est.vae_bytes)}, latents {_gib(est.latent_bytes)})",
    )
    host = f"about {_gib(est.host_bytes)} (frames {_gib(est.frame_bytes)}, runtime {_gib(HOST_RUNTIME_BYTES)}"
    if est.offloaded_bytes:
        host += f", offloaded weights {_gib(est.offloaded_bytes)}"
    table.add_row("Host memory", host + ")")
    if device == "cpu":
        table.add_row("This run (CPU)", f"about {_gib(cpu_only_bytes(est))} of memory (weights counted once, no GPU)")
    elif device is not None:
        table.add_row("This run", f"on {device}")
    return table


def _chunk_list(chunks: Sequence[Chunk]) -> str:
    return ", ".join(f"{c.start}-{c.end - 1}" for c in chunks)


def _windows_table(plan: Plan) -> Table:
    table = Table(title="Windows (frame ranges inclusive)")
    table.add_column("#", justify="right")
    table.add_column("Frames")
    table.add_column("Chunks")
    windows = list(enumerate(plan.windows))
    if len(windows) > MAX_WINDOW_ROWS:
        half = MAX_WINDOW_ROWS // 2
        windows = windows[:half] + [None] + windows[-(half - 1) :]
    for item in windows:
        if item is None:
            table.add_row("...", "...", "...")
            continue
        i, w = item
        table.add_row(str(i), f"{w.start}-{w.end - 1}", _chunk_list(w.chunks))
    return table


def _reference_flops_per_frame(plan: Plan) -> float:
    """What the reference's policy (its canvas, chunks of 32 overlapping 16, no tiles) costs per frame here,
    at the same steps and guidance."""
    o = plan.options
    policy = replace(PlanOptions.reference(o.scale), model_steps=o.model_steps, guidance_branches=o.guidance_branches)
    height, width = plan.input_size
    return estimate(make_plan(plan.num_frames, height, width, policy)).flops_per_output_frame


def plan_summary(
    plan: Plan, est: Estimate, *, source: str | os.PathLike | None = None, engine: str = "star", device: str | None = None
) -> Group:
    """What ``--dry-run`` prints: the plan with its costs, then the windows and their chunks.

    Engines other than STAR see plain frame batches, so for them only sizes are shown.
    `device` (the type the run will use) adds what the pre-flight memory check compares.
    """
    if engine != "star":
        return Group(_plan_table(plan, est, source, engine, device))
    return Group(_plan_table(plan, est, source, engine, device), _windows_table(plan))

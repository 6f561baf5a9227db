"""`star upscale --dry-run`: a plan and its estimate as rich tables (sizes shown width x height)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from star_cli.families import DEFAULT_MODEL, Family, get_family
from star_cli.pipeline.estimate import GiB, HOST_RUNTIME_BYTES, Estimate, cpu_only_bytes
from star_cli.pipeline.jobs import Job
from star_cli.pipeline.plan import Chunk, Plan
from star_cli.pipeline.plan_rules import VAE_FACTOR
from star_cli.pipeline.ranks import assign_jobs, windows_per_rank

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


def _ranks_text(plan: Plan, ranks: int) -> str:
    """How a run over `ranks` processes shares this video's windows, and how to keep every rank busy."""
    windows = len(plan.windows)
    lo, hi = windows_per_rank(windows, ranks)
    text = f"{ranks}: windows claimed one at a time, {_range_text(lo, hi)} per rank when they cost alike"
    if windows >= ranks:
        return text
    text += f"; {ranks - windows} idle"
    if plan.options.window_chunks != 1 and len(plan.chunks) > windows:
        text += f" (--window-chunks 1 gives {len(plan.chunks)} windows)"
    return text


def _vae_text(tile: int | None) -> str:
    return "whole frames" if tile is None else f"in {tile * VAE_FACTOR} px tiles"


def _plan_table(
    plan: Plan,
    est: Estimate,
    source: str | os.PathLike | None,
    engine: str,
    family: Family,
    ranks: int,
    device: str | None,
) -> Table:
    o = plan.options
    table = Table(title="Upscale plan", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    if source is not None:
        table.add_row("Source", Text(os.fspath(source)))
    table.add_row("Input", f"{_size(*plan.input_size)}, {plan.num_frames} frames")
    table.add_row("Output", f"{_size(*plan.output_size)} (x{o.scale:g})")
    table.add_row("Engine", engine)
    if engine != "star":
        return table
    table.add_row("Model", family.name)
    table.add_row("Canvas", _canvas_text(plan))
    cuts = f"scene cuts at {', '.join(map(str, plan.scene_cuts))}" if plan.scene_cuts else "no scene cuts"
    table.add_row("Shots", f"{len(plan.shots)} ({cuts})")
    table.add_row("Chunks", _chunks_text(plan))
    lengths = [w.length for w in plan.windows]
    per = "all chunks of a shot" if o.window_chunks is None else f"up to {o.window_chunks} chunks"
    table.add_row("Windows", f"{len(plan.windows)} of up to {max(lengths)} frames ({per}), {o.blend} cross-fade")
    table.add_row("Tiles", _tiles_text(plan))
    if ranks > 1:
        table.add_row("Ranks", _ranks_text(plan, ranks))
    table.add_row("VAE", f"encode {_vae_text(o.vae_encode_tile)} (fp32), decode {_vae_text(o.vae_tile)}")
    if plan.tiling:
        table.add_row("Tiling", plan.tiling)
    table.add_row(
        f"{family.denoiser} evaluations",
        f"{plan.unet_evaluations} ({len(plan.chunks)} chunks x {len(plan.tiles)} tiles x "
        f"{o.model_steps} steps x {o.guidance_branches} branches)",
    )
    table.add_row("Pixel-frames", f"processed / output = {plan.work_ratio:.2f}")
    per_frame = est.flops_per_output_frame / 1e12
    compute = f"{est.flops / 1e15:.1f} PFLOP ({per_frame:.0f} TFLOP per output frame"
    reference = family.reference_flops_per_frame(plan)
    if reference is not None:
        compute += f", {est.flops_per_output_frame / reference:.2f} of the reference's policy"
    table.add_row("Compute", compute + ")")
    table.add_row(
        "GPU memory",
        f"about {_gib(est.device_bytes)} (weights {_gib(est.weights_bytes)}, denoiser activations "
        f"{_gib(est.activation_bytes)}, VAE encode {_gib(est.vae_encode_bytes)} / decode "
        f"{_gib(est.vae_decode_bytes)}, latents {_gib(est.latent_bytes)})",
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


def plan_summary(
    plan: Plan,
    est: Estimate,
    *,
    source: str | os.PathLike | None = None,
    engine: str = "star",
    family: Family | None = None,
    ranks: int = 1,
    device: str | None = None,
) -> Group:
    """What ``--dry-run`` prints: the plan with its costs, then the windows and their chunks.

    Engines other than STAR see plain frame batches, so for them only sizes are shown.
    `family` (default I2VGen-XL) compares the compute with its reference's policy.
    With `ranks` > 1 it also says how the ranks of a distributed run share the windows.
    `device` (the type the run will use) adds what the pre-flight memory check compares.
    """
    family = family or get_family(DEFAULT_MODEL)
    if engine != "star":
        return Group(_plan_table(plan, est, source, engine, family, ranks, device))
    return Group(_plan_table(plan, est, source, engine, family, ranks, device), _windows_table(plan))


def job_cost(plan: Plan) -> int:
    """Output pixel-frames: what orders a folder's videos for the ranks (longest first)."""
    return plan.output_pixel_frames


def jobs_table(planned: Sequence[tuple[Job, Plan]], ranks: int) -> Table:
    """Which rank upscales which video of a folder (longest first, each to the least loaded rank)."""
    owners = assign_jobs([job_cost(plan) for _, plan in planned], ranks)
    table = Table(title=f"Videos per rank ({ranks} ranks, longest first)")
    table.add_column("Rank", justify="right")
    table.add_column("Videos")
    table.add_column("Frames", justify="right")
    for rank in range(ranks):
        mine = [(job, plan) for (job, plan), owner in zip(planned, owners) if owner == rank]
        names = ", ".join(job.source.name for job, _ in mine) or "(idle)"
        table.add_row(str(rank), names, str(sum(plan.num_frames for _, plan in mine)))
    return table

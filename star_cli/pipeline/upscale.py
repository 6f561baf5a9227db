"""`star upscale`: probe -> plan -> reader -> engine -> writer -> atomic rename.

Frames stream through: the reader yields batches, a temporal engine restores
one window of the plan at a time, the joiner cross-fades window seams, and the
writer encodes as frames become final. Nothing here knows how an engine works.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Protocol

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from star_cli.errors import InputError
from star_cli.hub import WeightsPaths, ensure_weights, resolve_weights_dir
from star_cli.hub.layout import STAR_VARIANTS, weights_parameters
from star_cli.pipeline.estimate import Estimate, check_fits, estimate
from star_cli.pipeline.jobs import Job, plan_jobs
from star_cli.pipeline.plan import Plan, Window, make_plan
from star_cli.pipeline.render import plan_summary
from star_cli.pipeline.request import UpscaleRequest, encode_options_for
from star_cli.pipeline.resume import WindowStore, fingerprint, work_folder
from star_cli.pipeline.stream import WindowJoiner, gather_windows
from star_cli.pipeline.tiling import MemoryBudget, plan_tiles
from star_cli.video.probe import probe
from star_cli.video.reader import FrameBatch, count_decodable_frames, read_batches
from star_cli.video.scenes import detect_scene_cuts
from star_cli.video.writer import VideoWriter

READ_BATCH = 16
"""Frames per reader batch: large enough to amortise Python overhead, small enough to stream."""


class Engine(Protocol):
    """A restorer. Temporal engines see whole plan windows; others see reader batches."""

    name: str
    temporal: bool

    def restore(self, frames: np.ndarray, plan: Plan, window: Window | None = None) -> np.ndarray: ...


def host_memory_available() -> int | None:
    """Physical memory the OS can give us now (None where the OS does not say).

    Linux's MemAvailable counts the page cache the kernel would drop for us; free
    pages alone (the POSIX fallback) can be a small part of that on a machine that
    has just read large files, and would refuse runs that fit.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@contextmanager
def _progress(console: Console, quiet: bool) -> Iterator[Progress]:
    """Frames, fps and ETA while a video is written; a failed run erases the bar, leaving only its error line."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames  {task.fields[fps]} fps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=False,
    )
    with progress:
        try:
            yield progress
        except BaseException:
            progress.live.transient = True
            raise


def _make_engine(request: UpscaleRequest, console: Console, weights: WeightsPaths | None) -> Engine:
    if weights is None:
        from star_cli.pipeline.engines.lanczos import LanczosEngine

        return LanczosEngine()
    from star_cli.pipeline.engines.star import StarEngine

    return StarEngine.load(request.star, weights, console=console, quiet=request.quiet)


def _star_weights(request: UpscaleRequest, console: Console) -> WeightsPaths:
    """The checked weights folder (offering a download on a terminal), before any model code is imported."""
    checkpoint = request.star.checkpoint
    variant = checkpoint if checkpoint in STAR_VARIANTS else STAR_VARIANTS[0]
    return ensure_weights(request.star.weights_dir, variant, console=console)


def _device_memory(request: UpscaleRequest) -> int | None:
    """Free accelerator memory on the device the run will use (None: unknown, or the CPU)."""
    from star_cli.pipeline.engines.placement import device_memory, resolve_device

    return device_memory(resolve_device(request.star.device))


def _memory_budget(request: UpscaleRequest) -> MemoryBudget:
    """The memory `--tile-size auto` plans against, and how the run will use it."""
    star = request.star
    params = weights_parameters(resolve_weights_dir(star.weights_dir), star.checkpoint)
    return MemoryBudget(
        _device_memory(request), host_memory_available(), _run_dtype_bytes(request), star.offload, star.vae_group, params
    )


def _plan_job(job: Job, request: UpscaleRequest, budget: MemoryBudget | None) -> tuple[Plan, VideoWriter]:
    """Probe and plan one job, and set up (not open) its writer, so bad settings fail before any engine runs."""
    info = probe(job.source, ignore_errors=request.ignore_errors)
    # A damaged file may hold packets that decode to nothing: plan the frames the reader will yield.
    frames = count_decodable_frames(job.source) if request.ignore_errors else info.num_frames
    temporal = request.engine == "star"
    cuts = detect_scene_cuts(job.source, ignore_errors=request.ignore_errors) if temporal and request.scene_detect else ()
    if budget is None:
        plan = make_plan(frames, info.height, info.width, request.plan, scene_cuts=cuts)
    else:
        plan = plan_tiles(frames, info.height, info.width, request.plan, budget, scene_cuts=cuts)
    out_h, out_w = plan.output_size
    return plan, VideoWriter(job.dest, info, out_w, out_h, encode_options_for(job.dest, request.encode))


def _estimate(plan: Plan, request: UpscaleRequest, *, dtype_bytes: int = 2, model_params: int | None = None) -> Estimate:
    star = request.star
    sizes = {} if model_params is None else {"model_params": model_params}
    return estimate(plan, dtype_bytes=dtype_bytes, offload=star.offload, vae_group=star.vae_group, **sizes)


def _run_dtype_bytes(request: UpscaleRequest) -> int:
    """Bytes per weight/activation of the coming run: fp16 on accelerators, fp32 on the CPU unless told."""
    from star_cli.pipeline.engines.placement import resolve_dtype, resolve_device

    return resolve_dtype(request.star.dtype, resolve_device(request.star.device)).itemsize


def _check_memory(plans: list[Plan], request: UpscaleRequest) -> None:
    """Refuse, before any weights load, a run whose largest plan cannot fit (skipped where the OS does not say)."""
    host = host_memory_available()
    if host is None:
        return
    dtype_bytes = _run_dtype_bytes(request)
    params = weights_parameters(resolve_weights_dir(request.star.weights_dir), request.star.checkpoint)
    device = _device_memory(request)
    for plan in plans:
        check_fits(_estimate(plan, request, dtype_bytes=dtype_bytes, model_params=params), host, device)


def run_upscale(request: UpscaleRequest, *, console: Console) -> None:
    """Upscale every job of `request`; the engine (and its weights) is loaded once."""
    jobs = plan_jobs(request.input, request.output, overwrite=request.overwrite, dry_run=request.dry_run)
    budget = _memory_budget(request) if request.engine == "star" else None
    planned = [(job, *_plan_job(job, request, budget)) for job in jobs]
    report = Console() if request.dry_run else console
    for job, plan, _ in planned:
        if request.dry_run or request.verbose:
            est = budget.estimate(plan) if budget is not None else _estimate(plan, request)
            report.print(plan_summary(plan, est, source=job.source, engine=request.engine))
    if request.dry_run:
        return
    weights = None
    if request.engine == "star":
        _check_memory([plan for _, plan, _ in planned], request)
        weights = _star_weights(request, console)
    engine: Engine | None = None
    for job, plan, writer in planned:
        engine = engine or _make_engine(request, console, weights)
        _upscale_one(job, plan, writer, engine, request, console)
        if not request.quiet:
            console.print(f"[green]wrote[/] {job.dest}")


def _upscale_one(job: Job, plan: Plan, writer: VideoWriter, engine: Engine, request: UpscaleRequest, console: Console) -> None:
    store = None
    if engine.temporal:
        run_id = fingerprint(job.source, (_frame_settings(request), replace(plan, tiling="")))  # the note holds memory figures
        store = WindowStore(work_folder(job.dest), run_id, resume=request.star.resume)
    with _progress(console, request.quiet) as progress:
        task = progress.add_task(job.source.name, total=plan.num_frames, fps="-")
        with writer:
            batches = read_batches(job.source, READ_BATCH, ignore_errors=request.ignore_errors)
            if store is None:
                for batch in batches:
                    writer.write(engine.restore(batch.frames, plan), batch.pts)
                    _advance(progress, task, len(batch.pts))
            else:
                for frames, pts in _restore_windows(batches, plan, engine, store):
                    writer.write(frames, pts)
                    _advance(progress, task, len(pts))
            if writer.frames_written != plan.num_frames:  # inside the block: a short video is never kept
                raise InputError(f"{job.source}: only {writer.frames_written} of {plan.num_frames} frames could be read")
        for warning in writer.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
    if store is not None:
        store.remove()


def _frame_settings(request: UpscaleRequest) -> tuple:
    """The STAR settings that change output frames (not --resume, not the device's name)."""
    star = request.star
    return (star.checkpoint, star.prompt, star.seed, star.steps, star.guidance, star.solver, star.color_fix, star.dtype, star.vae_group, star.quantize)


def _restore_windows(
    batches: Iterable[FrameBatch], plan: Plan, engine: Engine, store: WindowStore
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Yield final (frames, pts) as windows are restored (or replayed from `store`) and joined."""
    spans = [(w.start, w.end) for w in plan.windows]
    joiner = WindowJoiner(spans)
    for window_frames in gather_windows(batches, spans):
        window = plan.windows[window_frames.index]
        restored = store.load(window_frames.index)
        if restored is None:
            restored = engine.restore(window_frames.frames, plan, window)
            store.save(window_frames.index, restored)
        frames, pts = joiner.add(window_frames.index, restored, window_frames.pts, np.asarray(window.weights))
        if pts:
            yield frames, pts


def _advance(progress: Progress, task: TaskID, count: int) -> None:
    progress.advance(task, count)
    speed = progress.tasks[task].speed
    progress.update(task, fps=f"{speed:.1f}" if speed else "-")

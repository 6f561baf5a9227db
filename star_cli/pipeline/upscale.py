"""`star upscale`: probe -> plan -> reader -> engine -> writer -> atomic rename.

Frames stream through: the reader yields batches, a temporal engine restores
one window of the plan at a time, the joiner cross-fades window seams, and the
writer encodes as frames become final. Nothing here knows how an engine works.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from star_cli.errors import InputError
from star_cli.pipeline.estimate import Estimate, check_fits, estimate
from star_cli.pipeline.jobs import Job, plan_jobs
from star_cli.pipeline.plan import Plan, Window, make_plan
from star_cli.pipeline.render import plan_summary
from star_cli.pipeline.request import UpscaleRequest
from star_cli.pipeline.resume import WindowStore, fingerprint, work_folder
from star_cli.pipeline.stream import WindowJoiner, gather_windows
from star_cli.video.probe import VideoInfo, probe
from star_cli.video.reader import read_batches
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
    """Physical memory the OS can give us now (None where the OS does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _progress(console: Console, quiet: bool) -> Progress:
    return Progress(
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


def _make_engine(request: UpscaleRequest, console: Console) -> Engine:
    if request.engine == "lanczos":
        from star_cli.pipeline.engines.lanczos import LanczosEngine

        return LanczosEngine()
    from star_cli.pipeline.engines.star import StarEngine

    return StarEngine.load(request.star, console=console, quiet=request.quiet)


def _plan_job(job: Job, request: UpscaleRequest) -> tuple[VideoInfo, Plan]:
    info = probe(job.source, ignore_errors=request.ignore_errors)
    temporal = request.engine == "star"
    cuts = detect_scene_cuts(job.source, ignore_errors=request.ignore_errors) if temporal and request.scene_detect else ()
    return info, make_plan(info.num_frames, info.height, info.width, request.plan, scene_cuts=cuts)


def _estimate(plan: Plan, request: UpscaleRequest) -> Estimate:
    star = request.star
    dtype_bytes = 4 if star.dtype == "fp32" else 2
    return estimate(plan, dtype_bytes=dtype_bytes, offload=star.offload, vae_group=star.vae_group)


def run_upscale(request: UpscaleRequest, *, console: Console) -> None:
    """Upscale every job of `request`; the engine (and its weights) is loaded once."""
    jobs = plan_jobs(request.input, request.output, overwrite=request.overwrite, dry_run=request.dry_run)
    planned = [(job, *_plan_job(job, request)) for job in jobs]
    engine: Engine | None = None
    for job, info, plan in planned:
        if request.dry_run or request.verbose:
            console.print(plan_summary(plan, _estimate(plan, request), source=job.source, engine=request.engine))
        if request.dry_run:
            continue
        if request.engine == "star":
            check_fits(_estimate(plan, request), host_memory_available() or 0, None)
        engine = engine or _make_engine(request, console)
        _upscale_one(job, info, plan, engine, request, console)
        if not request.quiet:
            console.print(f"[green]wrote[/] {job.dest}")


def _upscale_one(job: Job, info: VideoInfo, plan: Plan, engine: Engine, request: UpscaleRequest, console: Console) -> None:
    out_h, out_w = plan.output_size
    store = None
    if engine.temporal:
        run_id = fingerprint(job.source, (_frame_settings(request), plan))
        store = WindowStore(work_folder(job.dest), run_id, resume=request.star.resume)
    with _progress(console, request.quiet) as progress:
        task = progress.add_task(job.source.name, total=plan.num_frames, fps="-")
        with VideoWriter(job.dest, info, out_w, out_h, request.encode) as writer:
            batches = read_batches(job.source, READ_BATCH, ignore_errors=request.ignore_errors)
            if store is None:
                for batch in batches:
                    writer.write(engine.restore(batch.frames, plan), batch.pts)
                    _advance(progress, task, len(batch.pts))
            else:
                for frames, pts in _restore_windows(batches, plan, engine, store):
                    writer.write(frames, pts)
                    _advance(progress, task, len(pts))
        for warning in writer.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
    if writer.frames_written != plan.num_frames:
        raise InputError(f"{job.source}: wrote {writer.frames_written} of {plan.num_frames} frames")
    if store is not None:
        store.remove()


def _frame_settings(request: UpscaleRequest) -> tuple:
    """The STAR settings that change output frames (not --resume, not the device's name)."""
    star = request.star
    return (star.checkpoint, star.prompt, star.seed, star.steps, star.guidance, star.solver, star.color_fix, star.dtype, star.vae_group)


def _restore_windows(batches, plan: Plan, engine: Engine, store: WindowStore):
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


def _advance(progress: Progress, task, count: int) -> None:
    progress.advance(task, count)
    speed = progress.tasks[task].speed
    progress.update(task, fps=f"{speed:.1f}" if speed else "-")

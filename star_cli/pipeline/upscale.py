"""`star upscale`: probe -> plan -> reader -> engine -> writer -> atomic rename.

Frames stream through: the reader yields batches, a temporal engine restores
one window of the plan at a time, the joiner cross-fades window seams, and the
writer encodes as frames become final. Nothing here knows how an engine works.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from pathlib import Path

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

from star_cli.atomic import sweep_orphans
from star_cli.errors import InputError
from star_cli.families import Engine, get_family
from star_cli.hub import WeightsPaths, ensure_weights, resolve_weights_dir
from star_cli.hub.layout import MANIFEST, download_command, star_relpath
from star_cli.pipeline.estimate import Estimate, check_fits
from star_cli.pipeline.jobs import Job, plan_jobs
from star_cli.pipeline.plan import Plan, make_plan
from star_cli.pipeline.prefetch import TimedEngine, WriteBehind, prefetched
from star_cli.pipeline.ranks import Ranks
from star_cli.pipeline.render import jobs_table, plan_summary
from star_cli.pipeline.request import UpscaleRequest, encode_options_for
from star_cli.pipeline.identity import run_identity
from star_cli.pipeline.lock import output_locks, sweep_stale_locks
from star_cli.pipeline.resume import WindowStore, work_folder
from star_cli.pipeline.stream import WindowJoiner, gather_windows
from star_cli.pipeline.tiling import MemoryBudget, plan_tiles
from star_cli.terminal import message
from star_cli.video.probe import probe
from star_cli.video.reader import FrameBatch, count_decodable_frames, read_batches
from star_cli.video.scenes import detect_scene_cuts
from star_cli.video.writer import VideoWriter

READ_BATCH = 16
"""Frames per reader batch: large enough to amortise Python overhead, small enough to stream."""


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
        TextColumn("{task.description}", style="bold", markup=False),  # file names are not markup
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
    return get_family(request.star.model).load_engine(request.star, weights, console=console, quiet=request.quiet)


def _star_weights(request: UpscaleRequest, console: Console, *, interactive: bool | None = None) -> WeightsPaths:
    """The checked weights folder (offering a download on a terminal), before any model code is imported."""
    family = get_family(request.star.model)
    variant = family.weights_variant(request.star.checkpoint)
    root = resolve_weights_dir(request.star.weights_dir)
    if variant != family.variants[0] and (root / MANIFEST).is_file() and not (root / star_relpath(variant)).is_file():
        raise InputError(f"--checkpoint {variant}: {root} has no {star_relpath(variant)}: run `{download_command(root, variant)}`")
    return ensure_weights(request.star.weights_dir, variant, console=console, interactive=interactive)


def _device_memory(request: UpscaleRequest) -> int | None:
    """Free accelerator memory on the device the run will use (None: unknown, or the CPU)."""
    from star_cli.pipeline.engines.placement import device_memory, resolve_device

    return device_memory(resolve_device(request.star.device))


def _memory_budget(request: UpscaleRequest) -> MemoryBudget:
    """The memory `--tile-size auto` plans against, and how the run will use it."""
    star = request.star
    params = get_family(star.model).model_params(resolve_weights_dir(star.weights_dir), star.checkpoint)
    return MemoryBudget(
        _device_memory(request),
        host_memory_available(),
        _run_dtype(request).itemsize,
        star.offload,
        star.vae_group,
        params,
        star.model,
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
    writer = VideoWriter(job.dest, info, out_w, out_h, encode_options_for(job.dest, request.encode))
    writer.rehearse()
    return plan, writer


def _estimate(plan: Plan, request: UpscaleRequest, *, dtype_bytes: int = 2, model_params: int | None = None) -> Estimate:
    star = request.star
    family = get_family(star.model)
    return family.estimate(plan, dtype_bytes=dtype_bytes, offload=star.offload, vae_group=star.vae_group, model_params=model_params)


def _run_dtype(request: UpscaleRequest):  # -> torch.dtype (torch is imported only here)
    """The dtype of the coming run's weights and activations: fp16 on accelerators, fp32 on the CPU unless told."""
    from star_cli.pipeline.engines.placement import resolve_dtype, resolve_device

    family = get_family(request.star.model)
    return resolve_dtype(request.star.dtype, resolve_device(request.star.device), family.accelerator_dtype)


def _check_memory(plans: list[Plan], request: UpscaleRequest, *, processes_here: int = 1) -> None:
    """Refuse, before any weights load, a run whose largest plan cannot fit (skipped where the OS does not say).

    `processes_here` ranks share this machine's host memory, each with its own device.
    """
    host = host_memory_available()
    if host is None:
        return
    host //= processes_here
    dtype_bytes = _run_dtype(request).itemsize
    params = get_family(request.star.model).model_params(resolve_weights_dir(request.star.weights_dir), request.star.checkpoint)
    device = _device_memory(request)
    for plan in plans:
        check_fits(_estimate(plan, request, dtype_bytes=dtype_bytes, model_params=params), host, device)


def run_upscale(request: UpscaleRequest, *, console: Console) -> None:
    """Upscale every job of `request`; the engine (and its weights) is loaded once."""
    ranks = Ranks.from_env()
    if ranks.distributed and not request.dry_run:
        from star_cli.pipeline.scaleout import run_distributed

        return run_distributed(request, ranks, console)
    if request.devices and not request.dry_run:  # one process of a --gpus/--devices list: its entry is the device
        from star_cli.pipeline.distributed import rank_device

        request = rank_device(request, ranks)
    jobs = plan_jobs(request.input, request.output, overwrite=request.overwrite, dry_run=request.dry_run)
    budget = _memory_budget(request) if request.engine == "star" else None
    planned = [(job, *_plan_job(job, request, budget)) for job in jobs]
    report = Console(quiet=not ranks.is_main) if request.dry_run else console
    world = ranks.world if ranks.distributed else max(1, len(request.devices))
    sharing = 1 if request.input.is_dir() else world  # a folder's videos go to ranks whole
    for job, plan, _ in planned:
        if request.dry_run or request.verbose:
            summary = plan_summary(
                plan,
                budget.estimate(plan) if budget is not None else _estimate(plan, request),
                source=job.source,
                engine=request.engine,
                family=get_family(request.star.model),
                ranks=sharing,
            )
            report.print(summary)
    if request.dry_run:
        if world > 1 and request.input.is_dir():
            report.print(jobs_table([(job, plan) for job, plan, _ in planned], world))
        return
    with output_locks([job.dest for job in jobs]):
        for folder in {job.dest.parent for job in jobs}:  # leftovers of runs killed outright (SIGKILL, OOM)
            sweep_orphans(folder)
            sweep_stale_locks(folder)
        weights = None
        if request.engine == "star":
            _check_memory([plan for _, plan, _ in planned], request)
            weights = _star_weights(request, console)
        stores = _open_stores(planned, request, weights, console) if weights is not None else {}
        engine: Engine | None = None
        for job, plan, writer in planned:
            engine = engine or _make_engine(request, console, weights)
            _upscale_one(job, plan, writer, engine, request, console, stores.get(job.dest))
            if not request.quiet:
                console.print(message(str(job.dest), "wrote", "green"), soft_wrap=True)


def open_store(job: Job, plan: Plan, request: UpscaleRequest, weights: WeightsPaths, console: Console) -> WindowStore:
    """`job`'s work folder, opened (and --resume's identity checked) before any model loads."""
    # the tiling note holds memory figures of this machine, not frame settings
    identity = run_identity(request, job.source, replace(plan, tiling=""), weights, dtype=str(_run_dtype(request)))
    return WindowStore(work_folder(job.dest), identity, resume=request.star.resume, warn=_warner(console))


def _open_stores(
    planned: list[tuple[Job, Plan, VideoWriter]], request: UpscaleRequest, weights: WeightsPaths, console: Console
) -> dict[Path, WindowStore]:
    """Every job's work folder, opened before any model loads."""
    return {job.dest: open_store(job, plan, request, weights, console) for job, plan, _ in planned}


def _upscale_one(
    job: Job,
    plan: Plan,
    writer: VideoWriter,
    engine: Engine,
    request: UpscaleRequest,
    console: Console,
    store: WindowStore | None,
    on_frames: Callable[[int], None] | None = None,
) -> None:
    """One job; a temporal engine goes window by window through `store` (its work folder).

    `on_frames(n)` hears of every n frames written (a distributed run's progress)."""
    timed = TimedEngine(engine)
    with _progress(console, request.quiet) as progress:
        task = progress.add_task(job.source.name, total=plan.num_frames, fps="-")
        with writer:
            # Decoding runs ahead and encoding behind the engine, each on its own thread (prefetch.py).
            reader = prefetched(read_batches(job.source, READ_BATCH, ignore_errors=request.ignore_errors))
            with closing(reader) as batches, WriteBehind(writer.write) as write_behind:
                if store is None:
                    for batch in batches:
                        write_behind.put(timed.restore(batch.frames, plan), batch.pts)
                        _advance(progress, task, len(batch.pts), on_frames)
                else:
                    for frames, pts in _restore_windows(batches, plan, timed, store):
                        write_behind.put(frames, pts)
                        _advance(progress, task, len(pts), on_frames)
            if writer.frames_written != plan.num_frames:  # inside the block: a short video is never kept
                raise InputError(f"{job.source}: only {writer.frames_written} of {plan.num_frames} frames could be read")
        for warning in writer.warnings:
            _warner(console)(warning)
    if store is not None:
        store.remove()
    if request.verbose:
        console.print(f"{job.source.name}: {timed.report()}")


def _warner(console: Console) -> Callable[[str], None]:
    """Print one `warning:` line (as it reads: paths may hold brackets)."""
    return lambda text: console.print(message(text, "warning:", "yellow"), soft_wrap=True)


def _restore_windows(
    batches: Iterable[FrameBatch], plan: Plan, engine: Engine, store: WindowStore
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Yield final (frames, pts) as windows are restored (or replayed from `store`) and joined."""
    spans = [(w.start, w.end) for w in plan.windows]
    joiner = WindowJoiner(spans)
    for window_frames in gather_windows(batches, spans):
        window = plan.windows[window_frames.index]
        restored = store.load(window_frames.index, (window.length, *plan.output_size))
        if restored is None:
            restored = engine.restore(window_frames.frames, plan, window)
            store.save(window_frames.index, restored)
        frames, pts = joiner.add(window_frames.index, restored, window_frames.pts, np.asarray(window.weights))
        if pts:
            yield frames, pts


def _advance(progress: Progress, task: TaskID, count: int, on_frames: Callable[[int], None] | None = None) -> None:
    if on_frames is not None:
        on_frames(count)
    progress.advance(task, count)
    speed = progress.tasks[task].speed
    progress.update(task, fps=f"{speed:.1f}" if speed else "-")

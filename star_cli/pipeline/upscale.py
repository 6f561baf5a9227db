"""`star upscale`: probe -> plan -> reader -> engine -> writer -> atomic rename.

Frames stream through: the reader yields batches (decoded ahead on a thread), a
temporal engine restores one window of the plan at a time (pipeline.windows), and
the writer encodes as frames become final (behind, on another thread:
pipeline.prefetch). Two steps, so a caller can show the plans between them:
`prepare` (pipeline.prepare) reads and plans every file and refuses bad settings
before any model loads; `execute` locks the outputs, opens the work folders, loads the engine once
and writes each file. The CLI, the Python API and each rank of a distributed run
(pipeline.scaleout) call these steps. Nothing here prints: progress leaves as
events (pipeline.events) through the caller's callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import replace
from typing import TypeVar, cast

import numpy as np

from star_cli.atomic import sweep_orphans
from star_cli.errors import InputError, skipped_videos
from star_cli.families import get_family
from star_cli.families.base import FamilyEngine
from star_cli.hub.layout import MANIFEST, WeightsPaths, check_weights_dir, download_command, resolve_weights_dir, star_relpath
from star_cli.pipeline.engines.base import Engine
from star_cli.pipeline.events import (
    EvaluationCounter,
    FileFinished,
    FileSkipped,
    FileStarted,
    FramesWritten,
    Notice,
    ProgressCallback,
    WindowFinished,
    ignore,
)
from star_cli.pipeline.identity import run_identity
from star_cli.pipeline.lock import output_locks, sweep_stale_locks
from star_cli.pipeline.memory import check_memory, run_dtype_name
from star_cli.pipeline.prefetch import WriteBehind, prefetched
from star_cli.pipeline.prepare import PlannedJob, Prepared, prepare
from star_cli.pipeline.request import StarSettings, UpscaleRequest
from star_cli.pipeline.plan import Plan
from star_cli.pipeline.resume import WindowStore, finished_windows, work_folder
from star_cli.pipeline.tiling import tile_choice
from star_cli.pipeline.timing import StageClock
from star_cli.pipeline.windows import restore_windows, window_evaluations
from star_cli.video.probe import VideoInfo
from star_cli.video.reader import READ_BATCH, read_frames
from star_cli.video.resize import LanczosResizer
from star_cli.video.writer import VideoWriter

WeightsResolver = Callable[[StarSettings], WeightsPaths]
"""Finds (or fetches) the checked weights of a STAR run; the CLI's may offer a download."""

T = TypeVar("T")


def weights_variant(star: StarSettings) -> str:
    """The weights-folder variant a run needs; a variant missing from a downloaded folder is refused (exit 2)."""
    family = get_family(star.model)
    variant = family.weights_variant(star.checkpoint)
    root = resolve_weights_dir(star.weights_dir)
    if variant != family.variants[0] and (root / MANIFEST).is_file() and not (root / star_relpath(variant)).is_file():
        raise InputError(f"--checkpoint {variant}: {root} has no {star_relpath(variant)}: run `{download_command(root, variant)}`")
    return variant


def checked_weights(star: StarSettings) -> WeightsPaths:
    """The weights folder a STAR run reads, or a StarError naming what is missing and the command that fetches it."""
    return check_weights_dir(resolve_weights_dir(star.weights_dir), weights_variant(star))


def make_engine(request: UpscaleRequest, weights: WeightsPaths | None, progress: ProgressCallback) -> Engine:
    """The engine a request asks for (STAR: its model family's, from `weights`)."""
    if request.engine != "star":
        from star_cli.pipeline.engines.lanczos import LanczosEngine

        return LanczosEngine()
    if weights is None:
        raise ValueError("the STAR engine is made from a checked weights folder")
    return get_family(request.star.model).load_engine(request.star, weights, progress=progress)


def engine_for(
    plans: Sequence[Plan],
    request: UpscaleRequest,
    weights: WeightsPaths | None,
    progress: ProgressCallback,
    *,
    engine: Engine | None = None,
    share: float = 1.0,
) -> Engine:
    """The run's engine (made from `weights` unless given), told the `plans` it will restore.

    A STAR engine prepares for the run's whole work there (`FamilyEngine.expect`:
    `--compile` auto weighs the sampling of all `plans`, `share` of it in this process).
    """
    engine = engine or make_engine(request, weights, progress)
    if request.engine == "star":
        cast(FamilyEngine, engine).expect(plans, share=share, progress=progress)
    return engine


def open_store(planned: PlannedJob, request: UpscaleRequest, weights: WeightsPaths, device: str, progress: ProgressCallback) -> WindowStore:
    """`planned`'s work folder, opened (and --resume's identity checked) before any model loads."""
    # the tiling note holds memory figures of this machine, not frame settings
    plan = replace(planned.plan, tiling="")
    identity = run_identity(
        request, planned.job.source, plan, weights, dtype=run_dtype_name(request.star, device), deinterlace=planned.deinterlace
    )
    return WindowStore(
        work_folder(planned.job.dest), identity, resume=request.star.resume, start_over=request.overwrite, warn=warner(progress),
        tiles=tile_choice(planned.plan.options),
    )


def warner(progress: ProgressCallback) -> Callable[[str], None]:
    """A `warn(text)` that sends a warning Notice."""
    return lambda text: progress(Notice(text, "warning"))


def execute(
    prepared: Prepared,
    *,
    progress: ProgressCallback = ignore,
    weights: WeightsResolver = checked_weights,
    engine: Engine | None = None,
) -> Engine | None:
    """Upscale every planned file; the engine (and its weights) is loaded once, after the checks.

    Missing weights are reported before the memory check, and the memory check uses
    the estimates `--dry-run` shows. The outputs are locked against a second run,
    leftovers of killed runs are swept, and every work folder is opened (its --resume
    identity checked) before the engine loads. A folder run goes on past a file that
    turns out unreadable and ends with a StarError (exit 1) naming every file left out.
    Returns the engine, so a caller may reuse it.
    """
    request = prepared.request
    for dest in prepared.finished:
        progress(Notice(f"{dest}: already written, kept (--resume)"))
    for skipped in prepared.skipped:
        progress(skipped)
    star = request.engine == "star"
    with output_locks([p.job.dest for p in prepared.jobs]):
        for folder in {p.job.dest.parent for p in prepared.jobs}:  # leftovers of runs killed outright (SIGKILL, OOM)
            sweep_orphans(folder)
            sweep_stale_locks(folder)
        paths = None
        if star and prepared.jobs:
            paths = weights(request.star)
            if engine is None:
                check_memory([p.plan for p in prepared.jobs], request.star, prepared.device or "cpu")
        device = prepared.device or "cpu"
        stores: dict[int, WindowStore] = {}
        try:
            for p in prepared.jobs if paths is not None else ():
                stores[id(p)] = open_store(p, request, paths, device, progress)
            return _execute_jobs(prepared, progress, paths, engine, stores)
        except BaseException:
            for store in stores.values():  # a run that fails keeps finished windows for --resume, and nothing else
                if not finished_windows(store.folder):
                    store.remove()
            raise


def _execute_jobs(
    prepared: Prepared, progress: ProgressCallback, paths: WeightsPaths | None, engine: Engine | None, stores: dict[int, WindowStore]
) -> Engine | None:
    request = prepared.request
    skipped = list(prepared.skipped)
    folder = request.input.is_dir()
    spent: dict[str, float] = {}  # stage totals before the file (the first file's include loading's text stage)
    told = False  # the engine is made (or told the plans) at the first file: an empty folder loads nothing
    for planned in prepared.jobs:
        if not told:
            engine, told = engine_for([p.plan for p in prepared.jobs], request, paths, progress, engine=engine), True
        for note in planned.notes:
            progress(Notice(note, "warning"))
        try:
            upscale_one(planned, engine, request, progress, store=stores.get(id(planned)), count=prepared.count, spent=spent)
            spent = dict(engine.clock.total)
        except InputError as error:
            if not folder:
                raise
            skipped.append(FileSkipped.of(planned.job.source, error))
            progress(skipped[-1])
    if skipped:
        raise skipped_videos([s.source.name for s in skipped], prepared.count, prepared.count - len(skipped))
    return engine


def run_upscale(
    request: UpscaleRequest,
    *,
    progress: ProgressCallback = ignore,
    weights: WeightsResolver = checked_weights,
    engine: Engine | None = None,
) -> Prepared:
    """`prepare` then `execute` (nothing is executed for a dry run)."""
    prepared = prepare(request)
    if not request.dry_run:
        execute(prepared, progress=progress, weights=weights, engine=engine)
    return prepared


def _timed(items: Iterable[T], clock: StageClock, stage: str) -> Iterator[T]:
    """`items`, the time spent waiting for each charged to `stage` of `clock`."""
    iterator = iter(items)
    while True:
        with clock.stage(stage):
            item = next(iterator, None)
        if item is None:
            return
        yield item


def _yuv_path(engine: Engine, info: VideoInfo) -> bool:
    """The Lanczos preview of an unrotated video resizes decoded YUV straight into the encoder's format."""
    return engine.name == "lanczos" and info.rotation == 0


def upscale_one(
    planned: PlannedJob,
    engine: Engine,
    request: UpscaleRequest,
    progress: ProgressCallback,
    *,
    store: WindowStore | None = None,
    count: int = 1,
    spent: dict[str, float] | None = None,
) -> None:
    """Upscale one planned file into its destination (atomically), reporting progress as it goes.

    A temporal engine goes window by window through `store` (its work folder, opened
    by the caller; None keeps nothing). `spent`: the engine clock's totals to count
    this file's stage seconds from (default: now).
    """
    job, plan, writer = planned.job, planned.plan, planned.writer
    clock = engine.clock
    evaluations = plan.unet_evaluations if engine.temporal else 0
    progress(FileStarted(planned.index, count, job.source, job.dest, plan.num_frames, len(plan.windows), evaluations,
                         store.folder if store is not None else None))
    counter = EvaluationCounter(evaluations, progress)
    if engine.temporal:
        engine.on_evaluations = counter.add  # type: ignore[attr-defined]

    def on_window(window: int, replayed: bool) -> None:
        if replayed:
            counter.add(window_evaluations(plan, plan.windows[window]))
        progress(WindowFinished(window, len(plan.windows), clock.lap(), replayed))

    clock.lap()  # the file's laps start here (model loading is not part of a window)
    before = dict(clock.total) if spent is None else spent
    started = time.perf_counter()
    with writer:
        if _yuv_path(engine, planned.info):
            _resize_yuv(planned, writer, request, clock, progress)
        else:
            _restore_rgb(planned, writer, engine, request, progress, store, on_window)
        if writer.frames_written != plan.num_frames:  # inside the block: a short video is never kept
            raise InputError(f"{job.source}: only {writer.frames_written} of {plan.num_frames} frames could be read")
    for warning in writer.warnings:
        progress(Notice(warning, "warning"))
    if store is not None:
        store.remove()
    seconds = {stage: total - before.get(stage, 0.0) for stage, total in clock.total.items()}
    progress(FileFinished(job.source, job.dest, {k: v for k, v in seconds.items() if v > 0}, time.perf_counter() - started))


def _restore_rgb(
    planned: PlannedJob,
    writer: VideoWriter,
    engine: Engine,
    request: UpscaleRequest,
    progress: ProgressCallback,
    store: WindowStore | None,
    on_window: Callable[[int, bool], None],
) -> None:
    """Decode ahead and encode behind the engine, each on its own thread (pipeline.prefetch)."""
    plan, clock = planned.plan, engine.clock
    reader = prefetched(planned.batches(request.ignore_errors))
    with closing(reader), WriteBehind(writer.write) as write_behind:
        batches = _timed(reader, clock, "io")
        if engine.temporal:
            restored = restore_windows(batches, plan, engine, store, on_window)
        else:
            restored = ((engine.restore(b.frames, plan), b.pts) for b in batches)
        done = 0
        for frames, pts in restored:
            with clock.stage("io"):
                write_behind.put(np.ascontiguousarray(frames[:, : writer.height, : writer.width]), pts)
            done += len(pts)
            progress(FramesWritten(done, plan.num_frames))


def _resize_yuv(planned: PlannedJob, writer: VideoWriter, request: UpscaleRequest, clock: StageClock, progress: ProgressCallback) -> None:
    """Decode and resize on a worker thread, one batch ahead of the encoder (the resize is timed on that thread)."""
    resize = LanczosResizer(writer.width, writer.height, writer.pix_fmt, writer.matrix, writer.color_range)
    frames = read_frames(
        planned.job.source, ignore_errors=request.ignore_errors, segment=planned.segment, deinterlace=planned.deinterlace
    )

    def resized(frame: object) -> object:
        with clock.stage("resize"):
            return resize(frame)

    batch, stamps = [], []
    with closing(prefetched(((resized(frame), pts) for frame, pts in frames), READ_BATCH)) as ahead:
        for frame, pts in ahead:
            batch.append(frame)
            stamps.append(pts)
            if len(batch) == READ_BATCH:
                _write_yuv(writer, batch, stamps, clock, progress, planned.plan.num_frames)
                batch, stamps = [], []
    _write_yuv(writer, batch, stamps, clock, progress, planned.plan.num_frames)


def _write_yuv(writer: VideoWriter, batch: list, stamps: list[int], clock: StageClock, progress: ProgressCallback, total: int) -> None:
    if not batch:
        return
    with clock.stage("io"):
        writer.write_frames(batch, stamps)
    progress(FramesWritten(writer.frames_written, total))


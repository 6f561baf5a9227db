"""`star upscale` over the ranks of a launched run (torchrun, accelerate launch, --gpus/--devices).

1. Every rank plans the same jobs (`--tile-size auto` for the least memory free on
   any rank, so they plan alike) and checks memory (its own device; the machine's
   host memory shared by its ranks) and the weights, and rank 0 takes every output's
   lock (`pipeline.lock`, held to the end); `distributed.agree` makes any failure
   every rank's, reported once by rank 0, before any rank loads weights.
2. Every rank writes its heartbeat card into the run folder beside the output, and
   rank 0 checks it sees all of them: else the output folder is not shared (exit 2).
3. A folder: each video goes to one rank, longest first; each rank writes its
   outputs exactly as a single run does. One video: windows are claimed one at a
   time in the work folder; each rank restores what it claims and stores it; rank 0
   also joins the stored windows in order and encodes them as they arrive, holding no
   more than a single run's join buffer. The plan is the one a single run makes, and
   stored windows are lossless, so the output is the single run's, frame for frame.
4. Rank 0 waits for every rank's own work, says done, and removes the bookkeeping.
A rank that fails leaves a failed card, a rank that stops beating is dead: either
stops the run with one line naming the rank, and no output; `--resume` then
recomputes only the windows that are not stored.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace

import numpy as np
from rich.console import Console

from star_cli.errors import InputError, ReportedElsewhere, StarError
from star_cli.families import get_family
from star_cli.hub import WeightsPaths
from star_cli.pipeline import distributed
from star_cli.pipeline.identity import frame_options
from star_cli.pipeline.lock import output_locks
from star_cli.pipeline.claims import PeerFailure, WindowClaims
from star_cli.pipeline.plan import Plan, Window
from star_cli.pipeline.ranks import Ranks, assign_jobs
from star_cli.pipeline.render import job_cost, plan_summary
from star_cli.pipeline.request import UpscaleRequest
from star_cli.pipeline.resume import WindowStore, finished_windows, work_folder
from star_cli.report import kept_windows_line
from star_cli.pipeline.shared_run import POLL, Shared, join_run
from star_cli.terminal import KeptWork, message
from star_cli.pipeline.stream import WindowJoiner, gather_windows
from star_cli.pipeline.engines.base import Engine
from star_cli.pipeline.events import Event, FramesWritten, Notice, ignore
from star_cli.pipeline.memory import FreeMemory, check_memory, free_memory, least_free, run_device
from star_cli.pipeline.prepare import PlannedJob, prepare
from star_cli.pipeline.upscale import (
    checked_weights,
    engine_for,
    make_engine,
    open_store,
    upscale_one,
    warner,
)

Planned = list[PlannedJob]


def run_distributed(request: UpscaleRequest, ranks: Ranks, console: Console) -> None:
    """This rank's part of a launched run; every rank returns (or fails) with the run."""
    distributed.start(ranks)
    talk = console if ranks.is_main else Console(stderr=True, quiet=not request.verbose)
    shared: Shared | None = None
    store: WindowStore | None = None
    held = ExitStack()
    try:
        request = distributed.agree(ranks, lambda: distributed.rank_device(request, ranks))
        own = distributed.agree(ranks, lambda: free_memory(run_device(request.star)) if request.engine == "star" else (None, None))
        free = least_free(distributed.gather(ranks, own))  # every rank plans 'auto' tiles for the tightest one
        request, planned, weights, device = distributed.agree(ranks, lambda: _prepare(request, ranks, console, free))
        distributed.agree(ranks, lambda: _same_everywhere(ranks, request, planned))
        # rank 0 holds every output's lock (a second run on them is refused) until the run ends
        distributed.agree(ranks, lambda: held.enter_context(output_locks([p.job.dest for p in planned])) if ranks.is_main else None)
        if ranks.is_main:  # what a single run says as it starts each file, said once for the run
            for note in (note for p in planned for note in p.notes):
                _printer(console)(Notice(note, "warning"))
        if request.verbose and ranks.is_main:
            for p in planned:
                console.print(plan_summary(p.plan, p.estimate, source=p.job.source, engine=request.engine, family=get_family(request.star.model), ranks=1 if request.input.is_dir() else ranks.world))
        store = distributed.agree(ranks, lambda: _open_store(request, planned, ranks, weights, device, console))
        shared = join_run(request, planned, ranks, store, console)
        if request.input.is_dir():
            _folder(request, planned, weights, device, shared, talk)
        else:
            _one_video(request, planned[0], weights, shared, store, talk)
        _finish(shared, store, len(planned))
    except BaseException as error:
        if shared is not None:
            if shared.progress is not None:
                shared.progress.bar.live.transient = True  # the error line is what stays
            shared.close("failed", str(error) or type(error).__name__)
        if isinstance(error, KeyboardInterrupt) and ranks.is_main and store is not None:
            if kept := finished_windows(store.folder):
                error = KeptWork(error, kept_windows_line(kept, len(planned[0].plan.windows), store.folder))
        raise _exit_for(error, ranks) from None
    finally:
        held.close()
        distributed.stop(ranks)


def _exit_for(error: BaseException, ranks: Ranks) -> BaseException:
    """What a failing rank raises: rank 0 reports; the others exit quietly unless the failure is their own."""
    if isinstance(error, distributed.Stopped):
        return ReportedElsewhere(143)  # the launcher stopped us and says why
    if isinstance(error, KeyboardInterrupt):
        return error if ranks.is_main else ReportedElsewhere(130)
    if isinstance(error, PeerFailure) and not ranks.is_main:
        return ReportedElsewhere(error.exit_code)
    if isinstance(error, StarError) and not ranks.is_main and not isinstance(error, ReportedElsewhere):
        error.args = (f"rank {ranks.rank}: {error}",)
    return error


def _prepare(
    request: UpscaleRequest, ranks: Ranks, console: Console, free: FreeMemory
) -> tuple[UpscaleRequest, Planned, WeightsPaths | None, str]:
    """Everything a single run checks before loading weights, on this rank's device (`free`: see `least_free`)."""
    prepared = prepare(request, free)
    if prepared.skipped:
        raise InputError(f"{prepared.skipped[0].source}: {prepared.skipped[0].reason}")
    weights = None
    device = prepared.device or "cpu"
    if request.engine == "star":
        weights = checked_weights(request.star)  # one terminal, many ranks: never offer a download
        check_memory([p.plan for p in prepared.jobs], request.star, device, processes_here=ranks.local_world)
    return request, prepared.jobs, weights, device


def _same_everywhere(ranks: Ranks, request: UpscaleRequest, planned: Planned) -> None:
    """Refuse a run whose ranks were given other options or see other inputs (its frames would depend on the rank)."""
    text = repr(([(p.job, replace(p.plan, tiling="")) for p in planned], frame_options(request), request.encode, request.engine))
    digests = distributed.gather(ranks, hashlib.sha256(text.encode()).hexdigest())
    odd = [rank for rank, digest in enumerate(digests) if digest != digests[0]]
    if odd:
        raise InputError(f"rank {odd[0]} was given other options or sees other input files than rank 0: give every rank the same command and files")


def _open_store(
    request: UpscaleRequest, planned: Planned, ranks: Ranks, weights: WeightsPaths | None, device: str, console: Console
) -> WindowStore | None:
    """One video with STAR: rank 0 opens the work folder (clears it, or checks it for --resume); the others attach."""
    if request.input.is_dir() or request.engine != "star" or weights is None:
        return None
    folder = work_folder(planned[0].job.dest)
    if not ranks.is_main:
        return WindowStore.attach(folder, warn=warner(_printer(console)))
    return open_store(planned[0], request, weights, device, _printer(console))


def _folder(
    request: UpscaleRequest, planned: Planned, weights: WeightsPaths | None, device: str, shared: Shared, talk: Console
) -> None:
    """This rank's videos of a folder (longest first over the ranks), each written as a single run writes it."""
    ranks = shared.ranks
    owners = assign_jobs([job_cost(p.plan) for p in planned], ranks.world)
    written = [0]

    def on_event(event: Event) -> None:  # a rank's frames go to its card; rank 0's bar shows the run's
        if isinstance(event, FramesWritten):
            shared.beat.progress(frames=event.done - written[0])
            written[0] = event.done
            shared.raise_failure()

    mine = [p for p, owner in zip(planned, owners) if owner == ranks.rank]
    engine: Engine | None = None
    for p in mine:
        engine = engine or engine_for([m.plan for m in mine], request, weights, _printer(talk) if ranks.is_main and not request.quiet else ignore)
        store = open_store(p, request, weights, device, _printer(talk)) if weights is not None else None
        written[0] = 0
        upscale_one(p, engine, request, on_event, store=store)
        if request.verbose:
            talk.print(f"rank {ranks.rank}: wrote {p.job.dest}")


def _printer(console: Console) -> Callable[[Event], None]:
    """A progress callback that prints only Notices (a rank's other progress is its card)."""

    def show(event: Event) -> None:
        if isinstance(event, Notice):
            label, style = ("warning:", "yellow") if event.level == "warning" else ("", "")
            console.print(message(event.text, label, style), soft_wrap=True)

    return show


class _LazyEngine:
    """The engine, loaded on the first window this rank claims (a rank with nothing to do loads nothing)."""

    def __init__(self, request: UpscaleRequest, console: Console, weights: WeightsPaths | None, share: float) -> None:
        self.request, self.console, self.weights, self.share = request, console, weights, share
        self.engine: Engine | None = None

    def restore(self, frames: np.ndarray, plan: Plan, window: Window) -> np.ndarray:
        if self.engine is None:
            progress = ignore if self.request.quiet else _printer(self.console)
            self.engine = engine_for([plan], self.request, self.weights, progress, share=self.share)
        return self.engine.restore(frames, plan, window)


def _claimed_windows(
    request: UpscaleRequest, planned: PlannedJob, engine: _LazyEngine, store: WindowStore, shared: Shared, talk: Console
) -> Iterator[int]:
    """Restore and store every window this rank can claim, in order; yields each one's index when stored."""
    plan = planned.plan
    claims = WindowClaims(store.folder / "claims", shared.beat.owner)
    spans = [(w.start, w.end) for w in plan.windows]
    for frames in gather_windows(planned.batches(request.ignore_errors), spans):
        shared.raise_failure()
        if store.has(frames.index) or not claims.take(frames.index):
            continue
        started = time.perf_counter()
        store.save(frames.index, engine.restore(frames.frames, plan, plan.windows[frames.index]))
        shared.beat.progress(windows=1, frames=len(frames.pts))
        if request.verbose:
            talk.print(f"rank {shared.ranks.rank}: window {frames.index} restored in {time.perf_counter() - started:.1f} s")
        yield frames.index


def _one_video(
    request: UpscaleRequest, planned: PlannedJob, weights: WeightsPaths | None,
    shared: Shared, store: WindowStore | None, talk: Console,
) -> None:
    """Claim and restore windows; rank 0 also joins them in order into the output."""
    job, plan, writer = planned.job, planned.plan, planned.writer
    ranks = shared.ranks
    engine_request = replace(request, quiet=not ranks.is_main or request.quiet)
    if store is None:  # an engine without windows: rank 0 runs it as a single run does, the others wait
        if ranks.is_main:
            upscale_one(planned, make_engine(request, weights, ignore), request, ignore)
        return
    worker = _claimed_windows(request, planned, _LazyEngine(engine_request, talk, weights, 1 / ranks.world), store, shared, talk)
    if not ranks.is_main:
        for _ in worker:
            pass
        return
    spans = [(w.start, w.end) for w in plan.windows]
    joiner = WindowJoiner(spans)
    with writer:
        for frames in gather_windows(planned.batches(request.ignore_errors), spans):
            while not store.has(frames.index):
                if worker is not None and next(worker, None) is None:
                    worker = None
                elif worker is None:
                    shared.raise_failure()
                    time.sleep(POLL)
            window = plan.windows[frames.index]
            restored = store.load(frames.index, (window.length, *plan.output_size))
            if restored is None:
                raise StarError(f"stored window {frames.index} was damaged after it was written: rerun with --resume to recompute it")
            joined, pts = joiner.add(frames.index, restored, frames.pts, np.asarray(window.weights))
            if pts:
                writer.write(np.ascontiguousarray(joined[:, : writer.height, : writer.width]), pts)
        if writer.frames_written != plan.num_frames:  # inside the block: a short video is never kept
            raise InputError(f"{job.source}: only {writer.frames_written} of {plan.num_frames} frames could be read")
    for warning in writer.warnings:
        talk.print(message(warning, "warning:", "yellow"), soft_wrap=True)
    if not request.quiet:
        talk.print(message(str(job.dest), "wrote", "green"), soft_wrap=True)


def _finish(shared: Shared, store: WindowStore | None, jobs: int) -> None:
    """Rank 0 waits for every rank's own work, then says done; all meet once more; rank 0 clears the bookkeeping."""
    ranks = shared.ranks
    shared.beat.mark("finished")
    if ranks.is_main:
        shared.wait_until(lambda cards: all(cards.get(r, {}).get("state") in ("finished", "done") for r in range(1, ranks.world)))
        if shared.progress is not None:
            shared.progress.show(shared.watch.cards())
    else:
        shared.wait_until(lambda cards: cards.get(0, {}).get("state") == "done")
    shared.close("done")
    distributed.barrier(ranks)
    if ranks.is_main:
        if store is not None:
            store.remove()
        else:
            shutil.rmtree(shared.folder, ignore_errors=True)
            if shared.progress is not None:
                shared.progress.bar.console.print(f"[green]wrote[/] {jobs} videos into {shared.folder.parent} ({ranks.world} ranks)")

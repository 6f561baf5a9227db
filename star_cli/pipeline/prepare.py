"""The first step of `star upscale`: read and plan every file before any model loads.

`prepare` checks what the run's device cannot do (the model family's `check_device`),
probes each source (segment, frame count, scene cuts), plans it (tiles
sized to the device's memory under --tile-size auto), and sets up and rehearses its
writer, so a bad setting, an unreadable file (in a folder: set aside, not fatal) or
an output the encoder refuses is found here, in one line, before the weights are
read. What it returns is what `--dry-run` shows and what `pipeline.upscale.execute`
(or each rank of `pipeline.scaleout`) then writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from star_cli.errors import InputError
from star_cli.families import get_family
from star_cli.pipeline.estimate import Estimate, estimate
from star_cli.pipeline.events import FileSkipped
from star_cli.pipeline.jobs import Job, plan_jobs
from star_cli.pipeline.memory import FreeMemory, memory_budget, run_device, run_estimate
from star_cli.pipeline.plan import Plan, make_plan
from star_cli.pipeline.request import UpscaleRequest, encode_options_for
from star_cli.pipeline.resume import finished_windows, stored_tiles, work_folder
from star_cli.pipeline.tiling import MemoryBudget, plan_tiles, restore_tiles
from star_cli.video.deinterlace import bwdif_frames, bwdif_refusal
from star_cli.video.encoding import even_size
from star_cli.video.probe import VideoInfo, probe
from star_cli.video.reader import READ_BATCH, FrameBatch, count_decodable_frames, read_batches
from star_cli.video.scenes import detect_scene_cuts
from star_cli.video.segment import Segment, find_segment
from star_cli.video.writer import VideoWriter


@dataclass
class PlannedJob:
    """One file, read and planned, with its writer set up (not opened)."""

    job: Job
    info: VideoInfo
    plan: Plan
    writer: VideoWriter
    estimate: Estimate
    segment: Segment | None = None
    notes: list[str] = field(default_factory=list)  # warnings about the input or the output format
    index: int = 1  # 1-based position among the files of the call (skipped ones count too)
    deinterlace: str | None = None  # the frames bwdif rebuilds (video.deinterlace.bwdif_frames)

    def batches(self, ignore_errors: bool) -> Iterator[FrameBatch]:
        """The source's frames as the plan counts them: its segment, deinterlaced as planned."""
        return read_batches(
            self.job.source, READ_BATCH, ignore_errors=ignore_errors, segment=self.segment, deinterlace=self.deinterlace
        )


@dataclass
class Prepared:
    """What `prepare` found: the planned files, the unreadable ones of a folder, and the run's device."""

    request: UpscaleRequest
    jobs: list[PlannedJob]
    skipped: list[FileSkipped]
    count: int  # files found
    device: str | None  # STAR: the device type the run will use
    finished: list[Path] = field(default_factory=list)  # outputs a --resume'd folder run already wrote: kept


def _read_source(job: Job, request: UpscaleRequest) -> tuple[VideoInfo, Segment | None, int, list[int]]:
    """Probe the source and find its segment, frame count and scene cuts (the part a bad file fails)."""
    info = probe(job.source, ignore_errors=request.ignore_errors)
    segment = find_segment(job.source, request.start, request.end) if request.start or request.end else None
    if segment is not None:
        frames = segment.frames
    else:  # a damaged file may hold packets that decode to nothing: plan the frames the reader will yield
        frames = count_decodable_frames(job.source) if request.ignore_errors else info.num_frames
    temporal = request.engine == "star"
    cuts = []
    if temporal and request.scene_detect:
        cuts = detect_scene_cuts(job.source, ignore_errors=request.ignore_errors, segment=segment)
    return info, segment, frames, [c for c in cuts if 0 < c < frames]


def _deinterlacing(info: VideoInfo, mode: str) -> tuple[str | None, list[str]]:
    """The frames bwdif rebuilds under `--deinterlace mode` (see `bwdif_frames`), and what the user
    should know before their frames change (or stay combed). A frame too small for bwdif is
    refused under `on` and keeps its fields under `auto`."""
    which = bwdif_frames(mode, info.interlaced)
    refusal = bwdif_refusal(info.coded_width, info.coded_height, info.pix_fmt) if which else None
    if refusal is not None and mode == "on":
        raise InputError(f"{info.path}: --deinterlace on: {refusal}")
    if refusal is not None:
        return None, [f"{info.path}: the video is interlaced, but {refusal}: its fields are kept"]
    return which, _input_notes(info, which)


def _input_notes(info: VideoInfo, deinterlace: str | None) -> list[str]:
    if deinterlace == "interlaced":
        return [f"{info.path}: the video is interlaced: its fields are rebuilt into whole frames (bwdif) before "
                "upscaling (--deinterlace off keeps them)"]
    if deinterlace is None and info.interlaced:
        return [f"{info.path}: the video is interlaced and --deinterlace off keeps its fields: moving edges stay combed"]
    return []


def plan_job(
    job: Job,
    request: UpscaleRequest,
    read: tuple[VideoInfo, Segment | None, int, list[int]],
    device: str | None,
    budget: MemoryBudget | None,
) -> PlannedJob:
    """Plan one read file (tiles for `budget` under --tile-size auto) and rehearse its writer, before any engine runs."""
    info, segment, frames, cuts = read
    resumed = restore_tiles(request.plan, stored_tiles(job.dest)) if request.star.resume and budget else None
    if resumed is not None:
        plan = make_plan(frames, info.height, info.width, resumed, scene_cuts=cuts)
        plan = replace(plan, tiling="the tiles the interrupted run chose (--resume)")
    elif budget is None:
        plan = make_plan(frames, info.height, info.width, request.plan, scene_cuts=cuts)
    else:
        plan = plan_tiles(frames, info.height, info.width, request.plan, budget, scene_cuts=cuts)
    out_h, out_w = plan.output_size
    options = encode_options_for(job.dest, request.encode)
    width, height = (out_w, out_h) if request.exact_size else even_size(options, info, out_w, out_h)
    deinterlace, notes = _deinterlacing(info, request.deinterlace)
    expected = max(info.num_frames, info.declared_frames)  # a truncated file declares frames it lost
    if request.ignore_errors and segment is None and frames < expected:
        notes.append(f"{job.source}: {expected - frames} of {expected} frames cannot be decoded and are left out (--ignore-errors)")
    if request.dry_run and not (request.overwrite or request.star.resume):
        if job.dest.exists():
            notes.append(f"{job.dest} exists: the run will refuse it without --overwrite")
        if kept := finished_windows(work_folder(job.dest)):  # none when there is no work folder
            notes.append(f"{kept} finished window(s) of an interrupted run are kept for it: the run needs --resume or --overwrite")
    if (width, height) != (out_w, out_h):
        notes.append(
            f"{job.dest.name}: {out_w}x{out_h} is odd, which 4:2:0 video cannot hold: written as {width}x{height} "
            "(the last row/column dropped; --exact-size keeps it in 4:4:4, which many players refuse)"
        )
    start = 0 if segment is None else segment.start_pts
    end = None if segment is None else segment.end_seconds
    writer = VideoWriter(job.dest, info, width, height, options, start_pts=start, end_seconds=end)
    writer.rehearse()
    notes.extend(writer.warnings)  # known now (a pixel shape the file cannot record): said before the run, not after
    writer.warnings.clear()
    est = run_estimate(plan, request.star, device) if device is not None else estimate(plan)
    return PlannedJob(job, info, plan, writer, est, segment, notes, deinterlace=deinterlace)


def prepare(request: UpscaleRequest, free: FreeMemory | None = None) -> Prepared:
    """Read and plan every file of `request`; in a folder, unreadable files are set aside, not fatal.

    `free`: the memory --tile-size auto plans against, measured before the models loaded
    (the Python API keeps its models loaded); None measures it now.
    """
    jobs = plan_jobs(
        request.input, request.output, overwrite=request.overwrite, dry_run=request.dry_run, resume=request.star.resume
    )
    jobs, finished = _finished_apart(jobs, request)
    folder = request.input.is_dir()
    made = folder and not request.output.exists()
    if made:  # the writers check their folder; a dry run, or a failed plan, removes it again
        request.output.mkdir()
    keep = False
    try:
        prepared = replace(_prepare_jobs(request, jobs, folder, free), finished=finished)
        keep = not request.dry_run
        return prepared
    finally:
        if made and not keep and not any(request.output.iterdir()):
            request.output.rmdir()


def _finished_apart(jobs: list[Job], request: UpscaleRequest) -> tuple[list[Job], list[Path]]:
    """Under --resume (without --overwrite), the outputs a folder run already wrote are kept, not redone.

    Finished means written with no work folder left beside it. An output beside a work folder
    is the old file of an interrupted --overwrite run: replaced only when asked again. A single
    finished file has nothing to resume.
    """
    if not request.star.resume or request.overwrite or request.dry_run:
        return jobs, []
    todo, finished = [], []
    for job in jobs:
        if not job.dest.exists():
            todo.append(job)
        elif work_folder(job.dest).is_dir():
            raise InputError(f"output exists: {job.dest} (use --overwrite to replace it)")
        elif request.input.is_dir():
            finished.append(job.dest)
        else:
            raise InputError(f"output exists: {job.dest}: that run finished, nothing to resume (--overwrite redoes it)")
    return todo, finished


def _prepare_jobs(request: UpscaleRequest, jobs: list[Job], folder: bool, free: FreeMemory | None) -> Prepared:
    device = run_device(request.star) if request.engine == "star" else None
    if device is not None:
        get_family(request.star.model).check_device(request.star, device)
    budget = memory_budget(request.star, device, free) if device is not None else None
    planned, skipped = [], []
    for index, job in enumerate(jobs, start=1):
        try:
            read = _read_source(job, request)
        except InputError as error:
            if not folder:
                raise
            skipped.append(FileSkipped.of(job.source, error))
            continue
        planned.append(replace(plan_job(job, request, read, device, budget), index=index))
    if folder and not planned and skipped:
        raise InputError(f"no video in {request.input} could be read (first: {skipped[0].reason})")
    return Prepared(request, planned, skipped, len(jobs), device)

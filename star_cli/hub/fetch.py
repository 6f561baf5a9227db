"""`star download-weights`: find what is missing, check the disk, fetch, convert, record.

Order of work, so that failures come early and cheaply: the manifest says what is
already done (no network); the Hub is asked about every missing file before any
byte moves (a gated repo is reported at once, and the disk check knows real sizes);
then each file is downloaded, verified, converted if it is a STAR pickle, and recorded
in the manifest right away, so an interrupted run loses at most the file in flight
(and not even that: its partial bytes are resumed).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.prompt import Confirm

from star_cli.errors import InputError, StarError
from star_cli.hub.download import (
    Expected,
    HubAccessError,
    RemoteFile,
    download_file,
    expected_of,
    hub_endpoint,
    is_offline,
    matching_sha256,
    resolve,
)
from star_cli.hub.layout import (
    FileRecord,
    WeightsPaths,
    check_weights_dir,
    converted_source,
    download_command,
    read_manifest,
    record_files,
    resolve_weights_dir,
    sha256_file,
    variants_of,
    weights_problem,
)
from star_cli.hub.sources import Component, SourceFile, Sources, load_sources
from star_cli.terminal import message

DOWNLOADS = ".downloads"
ORIGINALS = "original"
STAR_COMPONENT = "star"
STAR_COMPONENTS = (STAR_COMPONENT, "star_cogvideox")  # the STAR repo's checkpoints: `--revision` applies to them
_MARGIN_BYTES = 64 << 20
_GB = 1e9


@dataclass(frozen=True)
class _Job:
    """A missing file, where the Hub has it, and what it must hash to."""

    component: Component
    file: SourceFile
    remote: RemoteFile
    expected: Expected

    @property
    def fetch_relpath(self) -> str:
        """Where the download lands: its place in the layout, or original/ for a pickle to convert."""
        return f"{ORIGINALS}/{PurePosixPath(self.file.path).name}" if self.file.convert else self.file.dest


def _is_done(root: Path, file: SourceFile, manifest: dict[str, FileRecord], verify: bool) -> bool:
    """Recorded, present at the recorded size, of the pinned content, and (verify) of the recorded hash."""
    record = manifest.get(file.dest)
    path = root / file.dest
    if record is None or not path.is_file() or path.stat().st_size != record.size:
        return False
    if file.sha256 is not None:
        content = converted_source(path) if file.convert else record.sha256
        if content != file.sha256:
            return False
    return not verify or sha256_file(path) == record.sha256


def _resolve_component(component: Component, files: list[SourceFile], revision: str, endpoint: str, console: Console) -> list[RemoteFile]:
    """All `files` from the first of the component's repos (then mirrors, for pinned files) that serves every one."""
    failures: list[HubAccessError] = []
    pinned = all(f.sha256 is not None for f in files)  # a mirror may only deliver pinned content
    tries = [(repo, revision, False) for repo in component.repos]
    tries += [(mirror, "main", True) for mirror in component.mirrors if pinned]
    for repo, rev, mirror in tries:
        try:
            remotes = [resolve(repo, f.in_mirrors if mirror else f.path, rev, endpoint) for f in files]
        except HubAccessError as error:
            failures.append(error)
            continue
        if failures:
            kind = "the sha256-verified mirror " if mirror else ""
            console.print(message(f"using {kind}{repo} instead of {component.repos[0]} ({failures[0]})"))
        return remotes
    main = next((e for e in failures if e.gated), failures[0])
    others = [e.brief for e in failures if e is not main]
    raise StarError(str(main).rstrip(".") + f" (fallbacks tried: {'; '.join(others)})" if others else str(main))


def _plan(pending: list[tuple[Component, SourceFile]], revision: str | None, console: Console) -> list[_Job]:
    """Ask the Hub about every pending file, component by component (the order of `pending`)."""
    endpoint = hub_endpoint()
    jobs = []
    for component in {c.name: c for c, _ in pending}.values():
        files = [f for c, f in pending if c.name == component.name]
        rev = revision if revision and component.name in STAR_COMPONENTS else component.revision
        remotes = _resolve_component(component, files, rev, endpoint, console)
        jobs += [_Job(component, f, r, expected_of(r, f.sha256)) for f, r in zip(files, remotes)]
    return jobs


def disk_peak(steps: list[tuple[int, int, int]]) -> int:
    """Peak extra bytes on disk for (downloaded, written by conversion, deleted after) steps in order."""
    used = peak = 0
    for downloaded, written, deleted in steps:
        used += downloaded
        peak = max(peak, used + written)
        used += written - deleted
    return peak


def _check_disk(root: Path, jobs: list[_Job], keep_original: bool) -> None:
    """InputError before any download if the folder's disk cannot hold downloads plus conversions."""
    steps = []
    for job in jobs:
        partial = root / DOWNLOADS / f"{job.fetch_relpath}.incomplete"
        size = job.remote.size
        have = partial.stat().st_size if partial.is_file() else 0
        have = have if have <= size else 0
        # fp32 pickles become 16-bit safetensors: at most about half their size
        steps.append((size - have, size // 2 if job.file.convert else 0, size if job.file.convert and not keep_original else 0))
    need = disk_peak(steps)
    need += _MARGIN_BYTES + need // 100
    free = shutil.disk_usage(root).free
    if free < need:
        raise InputError(
            f"not enough free disk space in {root}: the weights need about {need / _GB:.1f} GB, "
            f"{free / _GB:.1f} GB are free (free some space or choose another --dir)"
        )


def _run_job(root: Path, job: _Job, progress: Progress, keep_original: bool) -> None:
    """Fetch (or reuse a correct local copy), convert if needed, record in the manifest."""
    dest = root / job.file.dest
    name = job.remote.name
    task = progress.add_task(name, total=job.remote.size)
    if job.file.convert and converted_source(dest) == job.expected.sha256:
        progress.update(task, completed=job.remote.size, description=f"{name}: already converted")
        record_files(root, {job.file.dest: FileRecord(dest.stat().st_size, sha256_file(dest))})
        return
    target = root / job.fetch_relpath
    sha256 = matching_sha256(target, job.expected)
    if sha256 is None:
        partial = root / DOWNLOADS / f"{job.fetch_relpath}.incomplete"
        sha256 = download_file(
            job.remote, job.expected, target, partial,
            endpoint=hub_endpoint(), on_progress=lambda n: progress.update(task, completed=n),
        )
    else:
        progress.update(task, completed=job.remote.size, description=f"{name}: already here")
    if not job.file.convert:
        record_files(root, {job.file.dest: FileRecord(job.remote.size, sha256)})
        return
    progress.update(task, description=f"{name}: converting to safetensors")
    # torch: only when there is something to convert
    if job.file.convert == "sat":
        from star_cli.hub.convert_sat import convert_sat_checkpoint as convert
    else:
        from star_cli.hub.convert import convert_star_checkpoint as convert
    dropped = convert(target, dest, config=job.component.config, source_sha256=sha256)
    if dropped:
        progress.console.print(message(f"{name}: ignored {len(dropped)} unexpected tensors ({', '.join(dropped[:5])})", "warning:", "yellow"))
    records = {job.file.dest: FileRecord(dest.stat().st_size, sha256_file(dest))}
    if keep_original:
        records[job.fetch_relpath] = FileRecord(job.remote.size, sha256)
    else:
        target.unlink()
        if not any(target.parent.iterdir()):
            target.parent.rmdir()
    record_files(root, records)
    progress.update(task, description=f"{name}: converted")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=console,
    )


def download_weights(
    variant: str = "light",
    dest: Path | None = None,
    *,
    revision: str | None = None,
    verify: bool = False,
    keep_original: bool = False,
    sources: Sources | None = None,
    console: Console | None = None,
) -> Path:
    """Make the weights folder complete for `variant` (light, heavy, all) and return it.

    `revision` applies to the STAR repo (the other repos use the sources' revisions).
    A complete folder returns after a size check (`verify` re-hashes every file).
    """
    variants = variants_of(variant)
    sources = sources or load_sources()
    console = console or Console(stderr=True)
    root = resolve_weights_dir(dest)
    label = f"STAR weights ({' + '.join(variants)})"
    manifest = read_manifest(root)
    pending = [(c, f) for c, f in sources.select(variants) if not _is_done(root, f, manifest, verify)]
    if not pending:
        console.print(message(f"{label} in {root} are complete{' and verified' if verify else ''}: nothing to do."))
        return root
    if is_offline():
        more = f" and {len(pending) - 1} more file(s)" if len(pending) > 1 else ""
        raise StarError(
            f"{root} lacks {pending[0][1].dest}{more} and HF_HUB_OFFLINE is set: "
            "unset it to download, or point --dir/STAR_WEIGHTS_DIR at a complete weights folder"
        )
    jobs = _plan(pending, revision, console)
    root.mkdir(parents=True, exist_ok=True)
    _check_disk(root, jobs, keep_original)
    with _progress(console) as progress:
        for job in jobs:
            _run_job(root, job, progress, keep_original)
    downloads = root / DOWNLOADS
    if downloads.is_dir() and not any(p.is_file() for p in downloads.rglob("*")):
        shutil.rmtree(downloads)
    console.print(message(f"{label} ready in {root}"))
    return root


def offer_download(
    dest: Path | None,
    variant: str = "light",
    *,
    reason: str | None = None,
    console: Console | None = None,
    interactive: bool | None = None,
) -> Path:
    """For `star upscale`: on a terminal ask once to download; otherwise a StarError naming the command."""
    console = console or Console(stderr=True)
    root = resolve_weights_dir(dest)
    reason = reason or weights_problem(root, variant) or f"STAR weights are needed in {root}"
    if interactive is None:
        interactive = sys.stdin.isatty() and console.is_terminal
    if interactive and Confirm.ask(message(f"{reason}. Download them now?"), console=console, default=True):
        return download_weights(variant, root, console=console)
    raise StarError(f"{reason}: run `{download_command(root, variant)}`")


def ensure_weights(
    dest: Path | None,
    variant: str = "light",
    *,
    console: Console | None = None,
    interactive: bool | None = None,
) -> WeightsPaths:
    """The checked weights for `variant`, offering a download when they are missing or corrupt."""
    root = resolve_weights_dir(dest)
    problem = weights_problem(root, variant)
    if problem is not None:
        offer_download(root, variant, reason=problem, console=console, interactive=interactive)
    return check_weights_dir(root, variant)

"""A rank's place in the shared folder of a launched run: joining it, watching the others, rank 0's bar.

Each rank of `pipeline.scaleout` writes its heartbeat card (`pipeline.claims`) into
the run folder beside the output; rank 0 checks it sees every rank's card (else the
folder is not shared: exit 2), and a background thread keeps reading the cards, so a
rank that failed or stopped beating stops the others between two pieces of work. Rank
0 draws the whole run's bar from the cards (a folder) or from the stored windows (one
video). Apart from scaleout, which decides what each rank does; this is how the ranks
see each other.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from star_cli.errors import InputError, StarError
from star_cli.pipeline import distributed
from star_cli.pipeline.claims import Heartbeat, Owner, RankWatch
from star_cli.pipeline.plan import Plan
from star_cli.pipeline.prepare import PlannedJob
from star_cli.pipeline.ranks import Ranks
from star_cli.pipeline.request import UpscaleRequest
from star_cli.pipeline.resume import WindowStore, work_folder
from star_cli.report import LOG_INTERVAL, clock_text
from star_cli.terminal import message

POLL = 0.2
"""Seconds between looks at the shared folder while a rank waits for others."""
MARKER_WAIT = 3.0
"""How long rank 0 looks for the other ranks' first cards (a shared filesystem may show them late)."""
FOLDER_RUN = ".star-ranks"
"""The run folder of a folder job, inside the output folder."""


@dataclass
class Shared:
    """This rank's view of the run: its card, everyone's cards, and a thread that keeps watching them."""

    ranks: Ranks
    folder: Path
    beat: Heartbeat
    watch: RankWatch
    failure: StarError | None = None
    progress: _RunProgress | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def watch_in_background(self) -> None:
        def loop() -> None:
            while not self.done.wait(POLL):
                try:
                    cards = self.watch.check(self.ranks.rank)
                except StarError as error:
                    self.failure = error
                    return
                if self.progress is not None:
                    self.progress.show(cards)

        threading.Thread(target=loop, name="star-watch", daemon=True).start()

    def close(self, state: str, message: str = "") -> None:
        """Stop watching and beating, leaving `state` on this rank's card."""
        self.done.set()
        if self.progress is not None:
            self.progress.bar.stop()
        self.beat.stop(state, message)

    def raise_failure(self) -> None:
        """Stop here if another rank failed or died (called between pieces of work)."""
        if self.failure is not None:
            raise self.failure

    def wait_until(self, done: Callable[[dict[int, dict]], bool]) -> None:
        """Wait until `done(cards)` holds, stopping if a rank fails meanwhile."""
        while not done(self.watch.cards()):
            self.raise_failure()
            time.sleep(POLL)


class _RunProgress:
    """Rank 0's bar for the whole run: windows done / total, frames, fps and ETA over all ranks.

    Off a terminal (logs, nohup) the bar stays hidden and a plain line is printed when a
    window finishes and at least every `LOG_INTERVAL` seconds, as a single run's report does.
    """

    def __init__(self, console: Console, quiet: bool, title: str, frames: int, store: WindowStore | None, plan: Plan | None) -> None:
        self.store, self.plan, self.console = store, plan, console
        self.plain = not quiet and not console.is_terminal
        self._said: tuple[str, float] = ("", 0.0)  # the windows text and time of the last plain line
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("windows {task.fields[windows]}  {task.completed:.0f}/{task.total:.0f} frames  {task.fields[fps]} fps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet or self.plain,
        )
        self.task = self.bar.add_task(title, total=frames, windows="-", fps="-")

    def show(self, cards: dict[int, dict]) -> None:
        if self.store is not None and self.plan is not None:
            windows = self.plan.windows
            done = [i for i in range(len(windows)) if self.store.has(i)]
            ends = [w.start for w in windows[1:]] + [self.plan.num_frames]
            frames = sum(ends[i] - windows[i].start for i in done)  # each window's frames up to the next one's start
            self.bar.update(self.task, completed=frames, windows=f"{len(done)}/{len(windows)}")
        else:
            self.bar.update(self.task, completed=sum(card["frames"] for card in cards.values()))
        speed = self.bar.tasks[self.task].speed
        self.bar.update(self.task, fps=f"{speed:.1f}" if speed else "-")
        if self.plain:
            self._plain_line()

    def _plain_line(self) -> None:
        task, now = self.bar.tasks[self.task], time.monotonic()
        windows = task.fields["windows"]
        if windows != self._said[0] or now - self._said[1] >= LOG_INTERVAL:
            self._said = (windows, now)
            done = f"windows {windows}, " if windows != "-" else ""
            line = f"{task.description}: {done}{task.completed:.0f}/{task.total:.0f} frames, {task.fields['fps']} fps, elapsed {clock_text(task.elapsed or 0)}"
            self.console.print(message(line), soft_wrap=True)


def _run_folder(request: UpscaleRequest, planned: list[PlannedJob]) -> Path:
    return request.output / FOLDER_RUN if request.input.is_dir() else work_folder(planned[0].job.dest) / "ranks"


def join_run(request: UpscaleRequest, planned: list[PlannedJob], ranks: Ranks, store: WindowStore | None, console: Console) -> Shared:
    """Write this rank's card; rank 0 checks that it sees every rank's card, i.e. that the folder is shared."""
    run = distributed.new_run_id(ranks)
    folder = _run_folder(request, planned)
    beat = Heartbeat(folder, Owner(run, ranks.rank))
    shared = Shared(ranks, folder, beat, RankWatch(folder, run, ranks.world))
    distributed.agree(ranks, lambda: _start_beat(beat))
    try:
        distributed.agree(ranks, lambda: _check_shared(shared))
    except StarError:
        beat.stop("failed")
        beat.path.unlink(missing_ok=True)
        if ranks.is_main and (store is None or not request.star.resume):
            shutil.rmtree(folder if store is None else store.folder, ignore_errors=True)
        else:
            for empty in (folder, folder.parent) if store is not None else (folder,):
                _remove_if_empty(empty)
        raise
    if ranks.is_main:
        jobs_frames = sum(p.plan.num_frames for p in planned)
        title = planned[0].job.source.name if store is not None else f"{len(planned)} videos"
        plan = planned[0].plan if store is not None else None
        shared.progress = _RunProgress(console, request.quiet, title, jobs_frames, store, plan)
        shared.progress.bar.start()
    shared.watch_in_background()
    return shared


def _start_beat(beat: Heartbeat) -> None:
    try:
        beat.start()
    except OSError as error:
        raise InputError(f"cannot write to {beat.path.parent}: {error.strerror or error}") from None


def _check_shared(shared: Shared) -> None:
    if not shared.ranks.is_main:
        return
    deadline = time.monotonic() + MARKER_WAIT
    while (missing := shared.watch.missing()) and time.monotonic() < deadline:
        time.sleep(POLL)
    if missing:
        names = ", ".join(map(str, missing))
        raise InputError(
            f"{shared.folder.parent} is not shared by every rank (rank {names} cannot see rank 0's files there): "
            "put the output on a filesystem every machine mounts at the same path"
        )


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass

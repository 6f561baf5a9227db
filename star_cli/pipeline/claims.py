"""Shared-folder coordination of the ranks of one run: heartbeats, window claims, and who failed.

Every file is written under a temporary name and renamed (or hard-linked) into place,
so a reader on any machine sees a whole file or none:

    <run folder>/rank-00003.json    the rank's owner card (run id, rank, host, pid), a beat
                                    counter a thread bumps every second, its progress
                                    (windows, frames) and its state: running, done, failed
    <work folder>/claims/window_000012
                                    the owner card of the rank computing window 12; made
                                    with link(), which exactly one rank wins

A rank is dead when its beat has not moved for `timeout` seconds of the observer's own
monotonic clock, so no clock is ever compared across machines. A claim whose owner
belongs to an earlier run (killed, then rerun with --resume) is taken over: one run
owns an output at a time, so that owner is gone. Should two ranks ever both take one
window, both compute the same frames (its noise comes from (seed, window)) and the
store's renames keep either copy whole.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from star_cli.errors import StarError

HEARTBEAT_INTERVAL = 1.0
"""Seconds between beats."""
HEARTBEAT_TIMEOUT = 60.0
"""Seconds without a beat after which a rank is dead; generous for loaded machines and slow shared filesystems."""
RERUN_HINT = "no output was written; run the same command with --resume to recompute only the missing windows"


class PeerFailure(StarError):
    """Another rank of the run failed or died: rank 0 reports it; the other ranks just stop."""


@dataclass(frozen=True)
class Owner:
    """Which process holds something: the run, its rank, and where that process lives."""

    run: str
    rank: int
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def describe(self) -> str:
        return f"rank {self.rank} ({self.host}, pid {self.pid})"


def _write_json(path: Path, data: dict) -> None:
    """Write `data` beside `path` and rename it into place (whole for every reader)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def rank_file(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.json"


class Heartbeat:
    """This rank's card in the run folder, refreshed by a daemon thread until `stop`."""

    def __init__(self, folder: Path, owner: Owner) -> None:
        self.path = rank_file(folder, owner.rank)
        self.owner = owner
        self._card = {**asdict(owner), "beat": 0, "state": "running", "message": "", "windows": 0, "frames": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="star-heartbeat", daemon=True)

    def write(self) -> None:
        """Bump the beat and write the card now."""
        with self._lock:
            self._card["beat"] += 1
            card = dict(self._card)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(self.path, card)

    def start(self) -> Heartbeat:
        self.write()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            try:
                self.write()
            except OSError:
                pass  # a shared filesystem hiccup: the next beat tries again; a long one makes us look dead, rightly

    def mark(self, state: str) -> None:
        """Change and write the state (running, then finished once this rank's own work is done)."""
        with self._lock:
            self._card["state"] = state
        self.write()

    def progress(self, windows: int = 0, frames: int = 0) -> None:
        """Count finished work (shown by rank 0 as the whole run's progress)."""
        with self._lock:
            self._card["windows"] += windows
            self._card["frames"] += frames

    def stop(self, state: str, message: str = "") -> None:
        """Stop beating and leave the final state (done or failed) for the others to read."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            self._card.update(state=state, message=message)
        try:
            self.write()
        except OSError:
            pass


class RankWatch:
    """Reads every rank's card of this run; `check` raises when another rank failed or stopped beating."""

    def __init__(
        self, folder: Path, run: str, world: int, *, timeout: float = HEARTBEAT_TIMEOUT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.folder, self.run, self.world, self.timeout, self.clock = folder, run, world, timeout, clock
        self._seen: dict[int, tuple[int, float]] = {}

    def cards(self) -> dict[int, dict]:
        """This run's cards by rank (cards of earlier runs in the folder are ignored)."""
        cards = {}
        for rank in range(self.world):
            card = _read_json(rank_file(self.folder, rank))
            if card is not None and card.get("run") == self.run:
                cards[rank] = card
        return cards

    def check(self, me: int) -> dict[int, dict]:
        """The cards, after making sure every other rank is alive and has not failed."""
        now = self.clock()
        cards = self.cards()
        for rank in range(self.world):
            if rank == me:
                continue
            card = cards.get(rank)
            if card is not None and card["state"] == "failed":
                raise PeerFailure(f"{_who(rank, card)} failed ({card['message'] or 'see its output'}); {RERUN_HINT}")
            beat = -1 if card is None else int(card["beat"])
            last_beat, since = self._seen.get(rank, (None, now))
            if beat != last_beat or (card is not None and card["state"] == "done"):
                self._seen[rank] = (beat, now)
            elif now - since > self.timeout:
                raise PeerFailure(f"{_who(rank, card)} stopped responding (no heartbeat for {self.timeout:.0f} s); {RERUN_HINT}")
        return cards

    def missing(self) -> list[int]:
        """Ranks whose card of this run cannot be seen here (the folder is not shared with them)."""
        cards = self.cards()
        return [rank for rank in range(self.world) if rank not in cards]


def _who(rank: int, card: dict | None) -> str:
    return f"rank {rank}" if card is None else f"rank {rank} ({card['host']}, pid {card['pid']})"


class WindowClaims:
    """Claims on windows in `folder`: a rank computes a window only after `take` says it is its own."""

    def __init__(self, folder: Path, owner: Owner) -> None:
        self.folder = folder
        self.owner = owner
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, index: int) -> Path:
        return self.folder / f"window_{index:06d}"

    def owner_of(self, index: int) -> Owner | None:
        card = _read_json(self._path(index))
        return None if card is None else Owner(**card)

    def take(self, index: int) -> bool:
        """Claim window `index`: True if it is now ours, False while a rank of this run holds it."""
        path = self._path(index)
        card = self.folder / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
        card.write_text(json.dumps(asdict(self.owner)), encoding="utf-8")
        try:
            while True:
                try:
                    os.link(card, path)
                    return True
                except FileExistsError:
                    pass
                holder = self.owner_of(index)
                if holder is None:
                    continue  # it vanished between our link and our read: try again
                if holder.run == self.owner.run:
                    return False
                self._take_over(path)
        finally:
            card.unlink(missing_ok=True)

    def _take_over(self, path: Path) -> None:
        """Move an earlier run's claim aside; if another rank of ours got there first, put its claim back."""
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        holder = _read_json(aside)
        if holder is not None and holder.get("run") == self.owner.run:
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

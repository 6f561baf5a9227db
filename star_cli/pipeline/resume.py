"""A work folder beside the output that keeps every finished window, so `--resume` works.

Each restored window is stored losslessly (FFV1, RGB) as soon as the engine
returns it. An interrupted run leaves the folder; `--resume` replays the stored
windows instead of recomputing them, and since every window's noise depends only
on (seed, window index), the joined frames are the same as an uninterrupted run's.
The folder is removed when the output is in place.

Layout (the API other modules build on is `WindowStore`):
- `state.json`: {"format", "identity", "tiles"}: the run's identity (`pipeline.identity`),
  written atomically when the store opens, and its tile choice (`tiling.tile_choice`),
  which a resumed `--tile-size auto` run plans with (`stored_tiles`) instead of planning
  for the memory free now. `--resume` with another identity is refused with the
  reason; a garbled state file discards the folder with a warning.
- `window_NNNNNN.mkv`: window NNNNNN's frames, renamed into place when complete.
- `window_NNNNNN.json`: its commit record {"sha256", "shape"}, written (atomically)
  after the .mkv. A window counts as finished only when both exist and agree;
  any other window file is damaged, discarded with a warning and recomputed.
Temporary files carry their writer's PID and are swept when that process is gone.
The caller holds the output's lock (`pipeline.lock`) while a store is open.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from star_cli.atomic import atomic_output, sweep_orphans
from star_cli.errors import InputError, StarError
from star_cli.pipeline.identity import Identity, identity_difference

STATE_FILE = "state.json"
STATE_FORMAT = 2


def work_folder(dest: Path) -> Path:
    """Where the windows of the run writing `dest` are kept."""
    return dest.with_name(f".{dest.name}.star-work")


def finished_windows(folder: Path) -> int:
    """How many windows an interrupted run left committed in its work `folder` (0 when there is none)."""
    return sum(1 for _ in folder.glob("window_*.json"))


def stored_tiles(dest: Path) -> object:
    """The tile choice an interrupted run writing `dest` stored, or None (no work folder, or an older one)."""
    state = _read_json(work_folder(dest) / STATE_FILE)
    return state.get("tiles") if isinstance(state, dict) else None


def _write_json(path: Path, data: object) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data), encoding="utf-8")


def _read_json(path: Path) -> object:
    """The parsed file, or None when it is missing or garbled."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class WindowStore:
    """Finished windows of one run, keyed by window index (see the module doc for the layout).

    `WindowStore(folder, identity, resume=..., start_over=..., warn=..., tiles=...)` opens the
    folder: with `resume`, a matching identity keeps the stored windows and a different one
    raises `InputError` naming the difference; without it, a folder holding finished windows
    is refused (they may be hours of work) unless `start_over` (--overwrite) empties it. `load(index, shape)`
    returns a verified window or None, `save(index, frames)` commits one, `remove()`
    deletes the folder. Write failures raise `StarError` and leave the folder consistent.
    """

    def __init__(
        self,
        folder: Path,
        identity: Identity,
        *,
        resume: bool,
        start_over: bool = False,
        warn: Callable[[str], None] = lambda _: None,
        tiles: dict[str, object] | None = None,
    ) -> None:
        self.folder = folder
        self.warn = warn
        state_path = folder / STATE_FILE
        if folder.exists() and resume:
            state = _read_json(state_path)
            if not isinstance(state, dict) or "format" not in state:
                self.warn(f"{state_path} is damaged or missing: its windows are discarded and recomputed")
                self._clear()
            elif (why := self._mismatch(state, identity)) is not None:
                raise InputError(f"cannot --resume from {folder}: {why}; run with --overwrite instead to start over")
            sweep_orphans(folder)
        elif folder.exists():
            finished = finished_windows(folder)
            if finished and not start_over:
                raise InputError(
                    f"{folder} holds {finished} finished window(s) of an interrupted run: add --resume to continue "
                    "from them, or --overwrite to start over"
                )
            self._clear()
        try:
            folder.mkdir(exist_ok=True)
            _write_json(state_path, {"format": STATE_FORMAT, "identity": identity, "tiles": tiles})
        except OSError as error:
            raise StarError(f"cannot write the work folder {folder}: {error.strerror or error}") from None

    @classmethod
    def attach(cls, folder: Path, *, warn: Callable[[str], None] = lambda _: None) -> WindowStore:
        """The store rank 0 of a distributed run opened, for its other ranks: nothing is checked or cleared."""
        store = cls.__new__(cls)
        store.folder = folder
        store.warn = warn
        return store

    def has(self, index: int) -> bool:
        """Whether window `index` has a commit record (finished by this run or an interrupted one)."""
        return self._paths(index)[1].exists()

    @staticmethod
    def _mismatch(state: dict, identity: Identity) -> str | None:
        if state.get("format") != STATE_FORMAT:
            return "it was made by another star version"
        # JSON round trip: compare what was stored with what would be stored
        return identity_difference(state.get("identity"), json.loads(json.dumps(identity)))

    def _clear(self) -> None:
        try:
            shutil.rmtree(self.folder)
        except OSError as error:
            raise StarError(f"cannot clear the work folder {self.folder}: {error.strerror or error}") from None

    def _paths(self, index: int) -> tuple[Path, Path]:
        stem = f"window_{index:06d}"
        return self.folder / f"{stem}.mkv", self.folder / f"{stem}.json"

    def load(self, index: int, shape: tuple[int, int, int]) -> np.ndarray | None:
        """Window `index`'s stored (frames, height, width, 3) output, or None: never finished, or damaged."""
        video, record_path = self._paths(index)
        if not video.exists() and not record_path.exists():
            return None
        record = _read_json(record_path)
        try:
            if not isinstance(record, dict):
                raise ValueError("its commit record is missing or unreadable")
            if record.get("sha256") != _sha256(video):
                raise ValueError("its checksum does not match")
            with av.open(str(video)) as container:
                frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
            if frames.shape != (*shape, 3):
                raise ValueError(f"it holds {frames.shape[:3]} frames, expected {shape}")
        except (OSError, ValueError, av.FFmpegError) as error:
            self.warn(f"stored window {index} is damaged ({error}): it is recomputed")
            video.unlink(missing_ok=True)
            record_path.unlink(missing_ok=True)
            return None
        return frames

    def save(self, index: int, frames: np.ndarray) -> None:
        """Store window `index`'s uint8 RGB output losslessly, then its commit record."""
        video, record_path = self._paths(index)
        height, width = frames.shape[1:3]
        try:
            with atomic_output(video) as tmp, av.open(str(tmp), "w") as container:
                stream = container.add_stream("ffv1", rate=1)
                stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
                for frame in frames:
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="bgr0")))
                container.mux(stream.encode(None))
            _write_json(record_path, {"sha256": _sha256(video), "shape": list(frames.shape)})
        except (OSError, av.FFmpegError) as error:
            video.unlink(missing_ok=True)
            reason = getattr(error, "strerror", None) or error
            raise StarError(
                f"cannot save window {index} in {self.folder}: {reason} (finished windows are kept for --resume)"
            ) from None

    def remove(self) -> None:
        """Forget the run (called once the output is safely in place)."""
        shutil.rmtree(self.folder, ignore_errors=True)

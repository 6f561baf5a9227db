"""A work folder beside the output that keeps every finished window, so `--resume` works.

Each restored window is stored losslessly (FFV1, RGB) as soon as the
engine returns it. An interrupted run leaves the folder; `--resume` replays the
stored windows instead of recomputing them, and since every window's noise
depends only on (seed, window index), the joined frames are the same as an
uninterrupted run's. The folder is removed when the output is in place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import av
import numpy as np

from star_cli.atomic import atomic_output
from star_cli.errors import InputError

STATE_FILE = "state.json"


def work_folder(dest: Path) -> Path:
    """Where the windows of the run writing `dest` are kept."""
    return dest.with_name(f".{dest.name}.star-work")


def fingerprint(source: Path, settings: object) -> str:
    """Identify a run: the source file (size, mtime) and every setting that changes frames."""
    stat = source.stat()
    text = json.dumps([str(source.resolve()), stat.st_size, stat.st_mtime_ns, repr(settings)])
    return hashlib.sha256(text.encode()).hexdigest()


class WindowStore:
    """Finished windows of one run, keyed by window index."""

    def __init__(self, folder: Path, run_id: str, *, resume: bool) -> None:
        self.folder = folder
        state = folder / STATE_FILE
        if folder.exists() and resume:
            stored = json.loads(state.read_text()).get("run") if state.exists() else None
            if stored != run_id:
                raise InputError(
                    f"{folder} belongs to a run with other settings or another input; run without --resume to start over"
                )
        elif folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(exist_ok=True)
        state.write_text(json.dumps({"run": run_id}))

    @classmethod
    def attach(cls, folder: Path) -> WindowStore:
        """The store rank 0 of a distributed run opened, for its other ranks: nothing is checked or cleared."""
        store = cls.__new__(cls)
        store.folder = folder
        return store

    def _path(self, index: int) -> Path:
        return self.folder / f"window_{index:06d}.mkv"

    def has(self, index: int) -> bool:
        """Whether window `index` is stored (finished by this run or an interrupted one)."""
        return self._path(index).exists()

    def load(self, index: int) -> np.ndarray | None:
        """The stored output of window `index`, or None if it never finished."""
        path = self._path(index)
        if not path.exists():
            return None
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        return np.stack(frames)

    def save(self, index: int, frames: np.ndarray) -> None:
        """Store window `index`'s uint8 RGB output losslessly (renamed into place when complete)."""
        height, width = frames.shape[1:3]
        with atomic_output(self._path(index)) as tmp, av.open(str(tmp), "w") as container:
            stream = container.add_stream("ffv1", rate=1)
            stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="bgr0")))
            container.mux(stream.encode(None))

    def remove(self) -> None:
        """Forget the run (called once the output is safely in place)."""
        shutil.rmtree(self.folder, ignore_errors=True)

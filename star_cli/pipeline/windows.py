"""The window loop of a temporal engine: gather, restore (or replay), store, join.

Shared by file runs (pipeline.upscale) and in-memory frames (the Python API), so
both produce the same frames for the same plan and settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from star_cli.pipeline.engines.base import Engine
from star_cli.pipeline.plan import Plan, Window
from star_cli.pipeline.resume import WindowStore
from star_cli.pipeline.stream import WindowJoiner, gather_windows
from star_cli.video.reader import FrameBatch

WindowDone = Callable[[int, bool], None]
"""Called with (window index, replayed from the store) once a window is restored."""


def window_evaluations(plan: Plan, window: Window) -> int:
    """Model evaluations of one window: its chunks x the plan's tiles x steps x guidance branches."""
    o = plan.options
    return len(window.chunks) * len(plan.tiles) * o.model_steps * o.guidance_branches


def restore_windows(
    batches: Iterable[FrameBatch],
    plan: Plan,
    engine: Engine,
    store: WindowStore | None = None,
    on_window: WindowDone | None = None,
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Yield final (frames, pts) as windows are restored (or replayed from `store`) and joined."""
    spans = [(w.start, w.end) for w in plan.windows]
    joiner = WindowJoiner(spans)
    for window_frames in gather_windows(batches, spans):
        window = plan.windows[window_frames.index]
        restored = None if store is None else store.load(window_frames.index, (window.length, *plan.output_size))
        replayed = restored is not None
        if restored is None:
            restored = engine.restore(window_frames.frames, plan, window)
            if store is not None:
                store.save(window_frames.index, restored)
        if on_window is not None:
            on_window(window_frames.index, replayed)
        frames, pts = joiner.add(window_frames.index, restored, window_frames.pts, np.asarray(window.weights))
        if pts:
            yield frames, pts

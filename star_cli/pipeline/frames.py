"""Frames in memory through an engine: a whole array (planned like a file), or a stream of any length.

An array is planned exactly as `star upscale` plans a file of the same frames
(without scene detection, which reads files), so both give the same frames for
the same settings. A stream's length is unknown until it ends, so it is cut into
windows of a fixed span as frames arrive (each the size of a file plan's largest
window, the last one taking up a short tail), cross-faded with their neighbours
like a file plan's windows; memory stays at about one and a half windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np

from star_cli.pipeline.engines.base import Engine
from star_cli.pipeline.events import EvaluationCounter, FramesWritten, ProgressCallback, WindowFinished, ignore
from star_cli.pipeline.plan import Chunk, Plan, PlanOptions, Window, make_plan
from star_cli.pipeline.stream import WindowJoiner
from star_cli.pipeline.windows import restore_windows
from star_cli.spans import span_weights
from star_cli.video.reader import FrameBatch

BATCH = 16


def _batches(frames: np.ndarray) -> Iterator[FrameBatch]:
    for start in range(0, len(frames), BATCH):
        chunk = frames[start : start + BATCH]
        yield FrameBatch(chunk, list(range(start, start + len(chunk))), start)


def upscale_array(engine: Engine, frames: np.ndarray, options: PlanOptions, progress: ProgressCallback = ignore) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, out_h, out_w, 3) uint8, planned as a file of these frames would be."""
    plan = make_plan(len(frames), frames.shape[1], frames.shape[2], options)
    out = np.empty((len(frames), *plan.output_size, 3), dtype=np.uint8)
    done = 0
    if engine.temporal:
        engine.on_evaluations = EvaluationCounter(plan.unet_evaluations, progress).add  # type: ignore[attr-defined]

        def on_window(index: int, replayed: bool) -> None:
            progress(WindowFinished(index, len(plan.windows), engine.clock.lap(), replayed))

        restored: Iterable[tuple[np.ndarray, list[int]]] = restore_windows(_batches(frames), plan, engine, None, on_window)
    else:
        restored = ((engine.restore(b.frames, plan), b.pts) for b in _batches(frames))
    for chunk, _ in restored:
        out[done : done + len(chunk)] = chunk
        done += len(chunk)
        progress(FramesWritten(done, len(frames)))
    return out


def stream_span(options: PlanOptions) -> int:
    """Frames per stream window: as many as a file plan's full window (window_chunks chunks of chunk_len)."""
    chunks = options.window_chunks or 4
    return chunks * options.chunk_len - (chunks - 1) * options.chunk_overlap


def _window(start: int, end: int, previous: tuple[int, int] | None, following: int | None, base: Plan, options: PlanOptions) -> Window:
    """The window [start, end) of a stream: chunks as a one-shot file plan of its length, absolute positions."""
    local = make_plan(end - start, *base.input_size, replace(options, window_chunks=None))
    chunks = tuple(Chunk(start + c.start, start + c.end, c.weights) for c in local.windows[0].chunks)
    spans = [s for s in (previous, (start, end)) if s is not None]
    if following is not None:
        spans.append((following, max(end, following + 1)))
    weights = span_weights(spans, options.blend)[1 if previous is not None else 0]
    return Window(start, end, chunks, tuple(weights.tolist()))


def upscale_stream(
    engine: Engine, frames: Iterable[np.ndarray], options: PlanOptions, progress: ProgressCallback = ignore
) -> Iterator[np.ndarray]:
    """Yield each (out_h, out_w, 3) uint8 frame of an (H, W, 3) uint8 stream as soon as it is final."""
    if not engine.temporal:
        plan = None
        for frame in frames:
            plan = plan or make_plan(1, frame.shape[0], frame.shape[1], options)
            yield engine.restore(frame[None], plan)[0]
        return
    span, overlap = stream_span(options), options.chunk_overlap
    source = iter(frames)
    held: list[np.ndarray] = []
    held_start, start, index, written = 0, 0, 0, 0
    previous: tuple[int, int] | None = None
    joiner = WindowJoiner([])
    base: Plan | None = None
    ended = False
    while True:
        # Read until the window and half a window beyond are here, or the stream ends.
        while not ended and held_start + len(held) < start + span + span // 2:
            frame = next(source, None)
            if frame is None:
                ended = True
            else:
                held.append(np.asarray(frame, dtype=np.uint8))
        available = held_start + len(held)
        if available <= start:
            return
        last = ended and available < start + span + span // 2
        end = available if last else start + span
        base = base or make_plan(1, *held[0].shape[:2], options)
        window = _window(start, end, previous, None if last else end - overlap, base, options)
        joiner.set_span(index, (start, end), None if last else end - overlap)
        restored = engine.restore(np.stack(held[start - held_start : end - held_start]), base, window)
        progress(WindowFinished(index, 0, engine.clock.lap(), False))
        out, _ = joiner.add(index, restored, list(range(start, end)), np.asarray(window.weights))
        for frame in out:
            written += 1
            yield frame
        progress(FramesWritten(written, 0))
        if last:
            return
        previous, start, index = (start, end), end - overlap, index + 1
        drop = start - held_start
        del held[:drop]
        held_start = start

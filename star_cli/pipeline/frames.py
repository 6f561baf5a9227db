"""Frames in memory through an engine: a whole array (planned like a file), or a stream of any length.

An array is restored with the plan the caller made for it (the Python API plans it
exactly as `star upscale` plans a file of the same frames, without scene detection,
which reads files), so both give the same frames for the same settings. A stream's
length is unknown until it ends, so it is cut into windows of a fixed span as frames
arrive (each the size of a file plan's largest window, the last one taking up a short
tail, or starting earlier where windows are chunks of one fixed length), cross-faded
with their neighbours like a file plan's windows; memory stays at about one and a half
windows (two for fixed-length ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from star_cli.errors import InputError
from star_cli.pipeline.engines.base import Engine
from star_cli.pipeline.events import EvaluationCounter, FramesWritten, ProgressCallback, WindowFinished, ignore
from star_cli.pipeline.plan import Chunk, Plan, PlanOptions, Window, make_plan
from star_cli.video.reader import READ_BATCH
from star_cli.pipeline.stream import WindowJoiner
from star_cli.pipeline.tiling import MemoryBudget, plan_tiles
from star_cli.pipeline.windows import restore_windows
from star_cli.spans import span_weights
from star_cli.video.reader import FrameBatch


def _batches(frames: np.ndarray) -> Iterator[FrameBatch]:
    """The array in the batches a file of these frames is read in."""
    for start in range(0, len(frames), READ_BATCH):
        chunk = frames[start : start + READ_BATCH]
        yield FrameBatch(chunk, list(range(start, start + len(chunk))), start)


def upscale_array(engine: Engine, frames: np.ndarray, plan: Plan, progress: ProgressCallback = ignore) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, out_h, out_w, 3) uint8 by `plan`, a plan of these frames."""
    if (plan.num_frames, *plan.input_size) != frames.shape[:3]:
        raise ValueError(f"a plan of {plan.num_frames} frames of {plan.input_size} for frames of shape {frames.shape}")
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


def _reach(options: PlanOptions, span: int) -> tuple[int, int]:
    """(frames read from a window's start before it is restored, the longest window).

    A short tail (under half a span) joins the last window. Where windows are chunks of
    one fixed length (the grid's exact chunks: a model trained on one clip length), no
    window may be longer than a span: the stream reads far enough to see whether the next
    window would come out short, and then starts it earlier (a larger overlap, as a file
    plan's balanced spans do), so every window but a short stream's only one is a full span.
    """
    if options.grid.exact_chunks:
        return 2 * span - options.chunk_overlap, span
    return span + span // 2, span + span // 2 - 1


def stream_plan(height: int, width: int, options: PlanOptions, budget: MemoryBudget | None = None) -> Plan:
    """The plan every window of a stream of (height, width) frames shares.

    Under `tile_size='auto'` its tiles are those `plan_tiles` picks against `budget` for
    a file of one full window (None: whole frames, as `make_plan` plans 'auto').
    """
    if budget is not None:
        options = plan_tiles(stream_span(options), height, width, options, budget).options
    return make_plan(1, height, width, options)


def _checked_frames(frames: Iterable[Any]) -> Iterator[np.ndarray]:
    """The stream's frames as (H, W, 3) uint8 arrays, all of the first one's size.

    A stream is planned from its first frame, so a frame of another size or kind is
    refused (InputError naming it) rather than cast or met by a raw error when windows stack.
    """
    size = None
    for index, frame in enumerate(frames):
        array = np.asarray(frame)
        if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise InputError(f"stream frame {index}: frames must be uint8 (H, W, 3), got {array.shape} {array.dtype}")
        size = size or array.shape[:2]
        if array.shape[:2] != size:
            raise InputError(f"stream frame {index} is {array.shape[1]}x{array.shape[0]} but frame 0 is "
                             f"{size[1]}x{size[0]} (width x height): every frame of a stream must have one size")
        yield array


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
    engine: Engine,
    frames: Iterable[np.ndarray],
    options: PlanOptions,
    progress: ProgressCallback = ignore,
    budget: MemoryBudget | None = None,
) -> Iterator[np.ndarray]:
    """Yield each (out_h, out_w, 3) uint8 frame of an (H, W, 3) uint8 stream as soon as it is final.

    A frame that is not uint8 (H, W, 3) of the first frame's size ends the stream with an InputError.
    `budget`: the memory `tile_size='auto'` is planned against (see `stream_plan`).
    """
    source = _checked_frames(frames)
    if not engine.temporal:
        plan = None
        for frame in source:
            plan = plan or stream_plan(frame.shape[0], frame.shape[1], options, budget)
            yield engine.restore(frame[None], plan)[0]
        return
    span, overlap = stream_span(options), options.chunk_overlap
    reach, longest = _reach(options, span)
    held: list[np.ndarray] = []
    held_start, start, index, written = 0, 0, 0, 0
    previous: tuple[int, int] | None = None
    joiner = WindowJoiner([])
    base: Plan | None = None
    ended = False
    while True:
        # Read until the window and what lies beyond it (see `_reach`) are here, or the stream ends.
        while not ended and held_start + len(held) < start + reach:
            frame = next(source, None)
            if frame is None:
                ended = True
            else:
                held.append(frame)
        available = held_start + len(held)
        if available <= start:
            return
        last = ended and available - start <= longest
        end = available if last else start + span
        following = None if last else end - overlap if not ended else min(end - overlap, available - span)
        base = base or stream_plan(*held[0].shape[:2], options, budget)
        window = _window(start, end, previous, following, base, options)
        joiner.set_span(index, (start, end), following)
        restored = engine.restore(np.stack(held[start - held_start : end - held_start]), base, window)
        progress(WindowFinished(index, 0, engine.clock.lap(), False))
        out, _ = joiner.add(index, restored, list(range(start, end)), np.asarray(window.weights))
        for frame in out:
            written += 1
            yield frame
        progress(FramesWritten(written, 0))
        if last:
            return
        previous, start, index = (start, end), following, index + 1
        drop = start - held_start
        del held[:drop]
        held_start = start

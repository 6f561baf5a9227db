"""Temporal side of the plan: chunks, windows, scene cuts, options, canvas, counts."""

from __future__ import annotations

import numpy as np
import pytest

from star_cli.errors import InputError
from star_cli.pipeline.plan import (
    PlanOptions,
    make_plan,
    minimal_canvas,
    output_size,
    reference_canvas,
)
from star_cli.spans import reference_spans


def reference_owner(spans, num_frames):
    """Which chunk each frame comes from in STAR's model_chunk_fn slicing (hard cut mid-overlap)."""
    overlap = spans[0][1] - spans[1][0]
    cut = overlap // 2
    owner = []
    for i, (s, e) in enumerate(spans):
        lo = 0 if i == 0 else cut
        hi = (e - s) if i == len(spans) - 1 else (e - s) + cut - overlap
        owner += [i] * (hi - lo)
    assert len(owner) == num_frames
    return owner


@pytest.mark.parametrize("frames,chunk,overlap", [(100, 32, 16), (40, 16, 8), (72, 32, 16), (95, 20, 7)])
def test_cut_mode_joins_exactly_like_reference(frames, chunk, overlap):
    options = PlanOptions(chunk_len=chunk, chunk_overlap=overlap, blend="cut", canvas="reference",
                          tile_size=None, window_chunks=None)
    plan = make_plan(frames, 24, 32, options)
    chunks = plan.chunks
    assert [(c.start, c.end) for c in chunks] == reference_spans(frames, chunk, overlap)
    weights = np.zeros((len(chunks), frames))
    for i, c in enumerate(chunks):
        weights[i, c.start : c.end] = c.weights
    assert set(np.unique(weights)) <= {0.0, 1.0}
    assert weights.argmax(0).tolist() == reference_owner(reference_spans(frames, chunk, overlap), frames)


def test_default_chunks_are_balanced_and_cheaper_than_reference():
    plan = make_plan(100, 240, 426, PlanOptions())
    assert [(c.start, c.end) for c in plan.chunks] == [(0, 31), (23, 54), (46, 77), (69, 100)]
    reference = make_plan(100, 240, 426, PlanOptions.reference())
    assert (plan.frame_evaluations, reference.frame_evaluations) == (124, 164)


@pytest.mark.parametrize("blend", ["cosine", "linear", "cut"])
def test_weights_are_partitions_of_unity(blend):
    plan = make_plan(500, 16, 16, PlanOptions(blend=blend, window_chunks=3), scene_cuts=[130, 131, 300])
    windows = np.zeros(plan.num_frames)
    for w in plan.windows:
        windows[w.start : w.end] += w.weights
        chunks = np.zeros(plan.num_frames)
        for c in w.chunks:
            chunks[c.start : c.end] += c.weights
        assert np.allclose(chunks[w.start : w.end], 1.0)  # the per-step x0 join inside a window
    assert np.allclose(windows, 1.0)  # the cross-fade of decoded windows
    if blend != "cut":
        assert all(0 < x <= 1 for c in plan.chunks for x in c.weights)


def test_scene_cuts_split_everything():
    cuts = [40, 41, 90]
    plan = make_plan(200, 16, 16, PlanOptions(window_chunks=2), scene_cuts=[0, *cuts])
    assert plan.scene_cuts == tuple(cuts)
    assert plan.shots == ((0, 40), (40, 41), (41, 90), (90, 200))
    for span in [*plan.windows, *plan.chunks]:
        assert not any(span.start < cut < span.end for cut in cuts)
    windows = {(w.start, w.end): w for w in plan.windows}
    # a one-frame shot is one chunk in one window with full weight
    assert windows[(40, 41)].weights == (1.0,) and windows[(40, 41)].chunks[0].weights == (1.0,)
    # frames beside a cut come from a single window with weight 1: nothing blends across
    weights = {f: [] for f in range(200)}
    for w in plan.windows:
        for f, x in zip(range(w.start, w.end), w.weights):
            weights[f].append(x)
    for cut in cuts:
        assert weights[cut - 1] == [1.0] and weights[cut] == [1.0]


def test_windows_hold_whole_chunks_and_overlap_by_chunk_overlap():
    options = PlanOptions(window_chunks=4)
    plan = make_plan(1000, 16, 16, options)
    assert all(len(w.chunks) <= 4 for w in plan.windows)
    assert max(len(w.chunks) for w in plan.windows) - min(len(w.chunks) for w in plan.windows) <= 1
    for w in plan.windows:
        assert (w.start, w.end) == (w.chunks[0].start, w.chunks[-1].end)
    for a, b in zip(plan.windows, plan.windows[1:]):
        assert a.end - b.start == a.chunks[-1].end - b.chunks[0].start >= options.chunk_overlap
    single = make_plan(1000, 16, 16, PlanOptions(window_chunks=None))
    assert len(single.windows) == 1
    assert [(c.start, c.end) for c in single.chunks] == [(c.start, c.end) for c in plan.chunks]


def test_short_shot_is_one_chunk():
    plan = make_plan(7, 16, 16, PlanOptions())
    assert [(c.start, c.end) for c in plan.chunks] == [(0, 7)]
    assert plan.chunks[0].weights == (1.0,) * 7


def test_scale_limits_and_odd_sizes():
    PlanOptions(scale=8)
    assert output_size(241, 321, 4) == (964, 1284)
    assert output_size(241, 321, 3.0) == (723, 963)
    assert output_size(3, 5, 1.5) == (5, 8)  # 4.5 and 7.5 round half up
    plan = make_plan(3, 241, 321, PlanOptions(scale=3))
    assert plan.output_size == (723, 963)
    pad = plan.canvas.padding
    assert (plan.canvas.height - pad.top - pad.bottom, plan.canvas.width - pad.left - pad.right) == (723, 963)
    with pytest.raises(InputError):
        make_plan(0, 241, 321, PlanOptions())


def test_reference_canvas_matches_pad_to_fit():
    c = reference_canvas(960, 1704)  # 426x240 at x4
    assert (c.height, c.width, c.latent_height, c.latent_width) == (976, 1728, 122, 216)
    p = c.padding
    assert (p.top, p.bottom, p.left, p.right, p.mode, p.value) == (0, 16, 0, 24, "constant", 1.0)
    small = reference_canvas(361, 641)
    assert (small.height, small.width) == (720, 1280)
    assert small.padding.torch_pad == (319, 320, 179, 180)
    assert reference_canvas(720, 1280).padding.torch_pad == (0, 0, 0, 0)
    big = reference_canvas(2160, 3840)
    assert (big.height, big.width) == (2192, 3904)


@pytest.mark.parametrize("h,w", [(960, 1704), (964, 1284), (723, 963), (720, 1280), (1, 1), (2160, 3840)])
def test_minimal_canvas_is_smallest_valid(h, w):
    c = minimal_canvas(h, w)
    p = c.padding
    assert (p.top, p.left, p.mode) == (0, 0, "replicate")
    assert (c.height - p.bottom, c.width - p.right) == (h, w)
    assert c.latent_height % 8 == 2 and c.latent_width % 8 == 0
    assert c.height - 64 < h and c.width - 64 < w  # one grid step less would not fit


def test_scale_is_printed_as_given_and_tiny_downscales_are_refused():
    with pytest.raises(InputError, match=r"got 8\.0000001$"):
        PlanOptions(scale=8.0000001)
    with pytest.raises(InputError, match=r"got 1e-9$"):
        PlanOptions(scale=1e-9)
    with pytest.raises(InputError, match="at least 16 px"):
        make_plan(2, 48, 64, PlanOptions(scale=0.25))
    assert make_plan(2, 1, 1, PlanOptions(scale=4)).output_size == (4, 4)  # tiny inputs upscale

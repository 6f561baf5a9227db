"""star_cli.spans: how lengths are split into overlapping spans and how the spans are joined."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from star_cli.spans import balanced_spans, reference_spans, rising_ramp, span_weights

CHUNKS = [(0, 16), (8, 24), (16, 32), (24, 40)]  # the sampler fixture's chunks of 40 frames


def test_reference_chunk_rule_matches_readme_and_fixture(fixtures_dir):
    assert reference_spans(100, 32, 16) == [(0, 32), (16, 48), (32, 64), (48, 80), (64, 100)]
    with safe_open(fixtures_dir / "star-reference" / "sampler_reference.safetensors", "pt") as f:
        expected = json.loads(f.metadata()["chunks_40_frames_max16"])
    assert [list(s) for s in reference_spans(40, 16, 8)] == expected
    assert reference_spans(20, 32, 16) == [(0, 20)]


@pytest.mark.parametrize("length", [1, 2, 31, 32, 33, 57, 100, 1001])
@pytest.mark.parametrize("max_len,overlap", [(32, 8), (32, 16), (9, 0), (5, 2)])
def test_balanced_spans_cover_bounded_with_overlap(length, max_len, overlap):
    spans = balanced_spans(length, max_len, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert len({e - s for s, e in spans}) == 1 and spans[0][1] - spans[0][0] <= max_len
    for (_, e0), (s1, _) in zip(spans, spans[1:]):
        assert e0 - s1 >= overlap
    if len(spans) > 1:  # fewest: one span less could not cover
        assert (len(spans) - 1) * max_len - (len(spans) - 2) * overlap < length


def test_balanced_spans_of_vae_decode_tiles():
    assert balanced_spans(40, 64, 16) == [(0, 40)]
    assert balanced_spans(200, None, 16) == [(0, 200)]
    for length, tile, overlap in [(65, 64, 16), (130, 64, 16), (29, 8, 3), (100, 10, 0)]:
        spans = balanced_spans(length, tile, overlap)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(end - start <= tile for start, end in spans)
        assert all(prev_end - start >= overlap for (_, prev_end), (start, _) in zip(spans, spans[1:]))
        assert len(spans) == -(-(length - overlap) // (tile - overlap))


@pytest.mark.parametrize("mode", ["cosine", "linear", "cut"])
@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_ramps_rise_and_soft_ones_are_symmetric(mode, n):
    r = rising_ramp(n, mode)
    assert r.shape == (n,)
    assert np.all(np.diff(r) >= 0) and r[-1] > 0
    if mode != "cut":
        assert np.allclose(r + r[::-1], 1.0)


def test_ramp_shapes():
    assert rising_ramp(4, "linear").tolist() == [0.125, 0.375, 0.625, 0.875]
    assert rising_ramp(5, "cut").tolist() == [0, 0, 1, 1, 1]
    cos = rising_ramp(8, "cosine")
    assert np.all((cos > 0) & (cos < 1))
    assert cos[0] < rising_ramp(8, "linear")[0]  # flatter start than a straight ramp
    with pytest.raises(ValueError):
        rising_ramp(3, "square")


def test_cut_weights_hand_over_in_the_middle_of_each_overlap():
    weights = span_weights(CHUNKS, "cut")
    kept = [(start + int(w.nonzero()[0].min()), start + int(w.nonzero()[0].max()) + 1)
            for (start, _), w in zip(CHUNKS, weights)]
    assert kept == [(0, 12), (12, 20), (20, 28), (28, 40)]  # the reference keeps exactly these frames
    assert set(np.concatenate(weights).tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("mode", ["cosine", "linear"])
def test_soft_weights_are_positive_and_sum_to_one_across_equal_overlaps(mode):
    weights = span_weights(CHUNKS, mode)
    total = np.zeros(40)
    for (start, end), w in zip(CHUNKS, weights):
        assert (w > 0).all() and (w <= 1).all()
        total[start:end] += w
    assert np.allclose(total, 1.0)


def test_soft_weights_of_neighbours_sum_to_one_and_stay_one_at_the_ends():
    left, right = span_weights([(0, 48), (32, 80)], "linear")
    assert np.allclose(left[32:] + right[:16], 1.0)
    assert left[0] == 1 and right[-1] == 1 and (left > 0).all()


def test_span_weights_normalise_triple_overlaps():
    spans = [(0, 27), (11, 38), (22, 49)]  # 0 and 2 overlap on 22..26
    total = np.zeros(49)
    for (s, e), w in zip(spans, span_weights(spans, "cosine")):
        total[s:e] += w
    assert np.allclose(total, 1.0)
    with pytest.raises(ValueError):
        span_weights([(0, 10), (12, 20)], "cosine")  # gap


@pytest.mark.parametrize("spans", [[(0, 10), (12, 20)], [(0, 12), (0, 20)], [(5, 12), (0, 20)]])
def test_spans_must_be_sorted_and_gap_free(spans):
    with pytest.raises(ValueError):
        span_weights(spans, "cut")


def test_unknown_mode_is_an_error_even_without_overlaps():
    with pytest.raises(ValueError, match="blend mode"):
        span_weights([(0, 10)], "square")

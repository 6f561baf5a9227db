from __future__ import annotations

import numpy as np
import pytest
from star_cli.pipeline.blend import rising_ramp, span_weights


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


def test_span_weights_normalise_triple_overlaps():
    spans = [(0, 27), (11, 38), (22, 49)]  # 0 and 2 overlap on 22..26
    total = np.zeros(49)
    for (s, e), w in zip(spans, span_weights(spans, "cosine")):
        total[s:e] += w
    assert np.allclose(total, 1.0)
    with pytest.raises(ValueError):
        span_weights([(0, 10), (12, 20)], "cosine")  # gap


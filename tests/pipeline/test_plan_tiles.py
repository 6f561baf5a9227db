"""Spatial side of the plan: the canvas cut into tiles."""

from __future__ import annotations

import numpy as np
import pytest

from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.plan_rules import VAE_FACTOR, is_valid_latent_height, is_valid_latent_width


def weight_sum(plan):
    total = np.zeros((plan.canvas.latent_height, plan.canvas.latent_width))
    for t in plan.tiles:
        total[t.top : t.top + t.height, t.left : t.left + t.width] += np.outer(t.row_weights, t.col_weights).astype(np.float32)
    return total


FIXED = PlanOptions(tile_size=(720, 1280))


def test_reference_canvas_in_four_balanced_tiles():
    plan = make_plan(4, 240, 426, FIXED)
    assert [(t.top, t.left, t.height, t.width) for t in plan.tiles] == [
        (0, 0, 74, 120), (0, 96, 74, 120), (48, 0, 74, 120), (48, 96, 74, 120)
    ]
    t = plan.tiles[3]
    assert tuple(VAE_FACTOR * v for v in (t.top, t.left, t.height, t.width)) == (384, 768, 592, 960)
    assert np.allclose(weight_sum(plan), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "size,scale,tile,overlap",
    [((1080, 1920), 2, (720, 1280), 128), ((241, 321), 4, (400, 512), 64), ((500, 90), 3, (144, 128), 64)],
)
def test_tiles_are_valid_bounded_and_cover(size, scale, tile, overlap):
    plan = make_plan(2, *size, PlanOptions(scale=scale, tile_size=tile, tile_overlap=overlap))
    assert len(plan.tiles) > 1
    for t in plan.tiles:
        assert is_valid_latent_height(t.height) and is_valid_latent_width(t.width)
        assert t.height * 8 <= tile[0] and t.width * 8 <= tile[1]
    assert np.allclose(weight_sum(plan), 1.0, atol=1e-6)
    rows = sorted({(t.top, t.top + t.height) for t in plan.tiles})
    cols = sorted({(t.left, t.left + t.width) for t in plan.tiles})
    for spans in (rows, cols):
        for (_, e0), (s1, _) in zip(spans, spans[1:]):
            assert e0 - s1 >= overlap // 8
    assert all(0 < x for t in plan.tiles for x in (*t.row_weights, *t.col_weights))


def test_no_tiles_when_canvas_fits_or_tiling_is_off():
    small = make_plan(2, 180, 320, FIXED)  # 720x1280: exactly one tile
    assert [(t.top, t.left, t.height, t.width) for t in small.tiles] == [(0, 0, 90, 160)]
    assert np.all(np.outer(small.tiles[0].row_weights, small.tiles[0].col_weights) == 1.0)
    untiled = make_plan(2, 1080, 1920, PlanOptions(scale=2, tile_size=None))
    assert len(untiled.tiles) == 1 and untiled.tiles[0].height == untiled.canvas.latent_height
    auto = make_plan(2, 1080, 1920, PlanOptions(scale=2))  # 'auto' without a memory figure: whole canvas
    assert len(auto.tiles) == 1
    wide = make_plan(2, 90, 1000, PlanOptions(scale=2, tile_size=(720, 1280)))  # tall enough for one row only
    assert len({t.top for t in wide.tiles}) == 1 and len(wide.tiles) > 1


def test_counts():
    plan = make_plan(100, 240, 426, FIXED)
    assert plan.unet_evaluations == 4 * 4 * 14 * 2
    assert plan.processed_pixel_frames == 124 * 4 * 592 * 960
    assert plan.output_pixel_frames == 100 * 960 * 1704
    reference = make_plan(100, 240, 426, PlanOptions.reference())
    assert reference.unet_evaluations == 5 * 1 * 14 * 2
    assert reference.work_ratio == pytest.approx(164 * 976 * 1728 / (100 * 960 * 1704))

from __future__ import annotations

import pytest
import torch

from star_cli.diffusion.tiled import Region, grid_regions, joined_x0_fn
from star_cli.diffusion.window import SamplerSettings, sample_window


@pytest.mark.parametrize("spans", [[(0, 10), (12, 20)], [(1, 20)], [(0, 12), (8, 18)], [(0, 12), (0, 20)], [], [(0, 25)]])
def test_spans_must_cover_the_axis(spans):
    with pytest.raises(ValueError):
        grid_regions(spans, [(0, 1)], [(0, 1)], (20, 1, 1), "cut")


def test_zero_weight_everywhere_on_a_point_is_an_error():
    region = Region(slice(0, 2), slice(0, 2), slice(0, 2), torch.zeros(2, 1, 1))
    with pytest.raises(ValueError, match="cover"):
        joined_x0_fn([region], lambda r: lambda x, s: x, (2, 2, 2))


FRAME_SPANS = [(0, 8), (5, 14), (12, 20)]
ROW_SPANS = [(0, 7), (4, 12)]
COL_SPANS = [(0, 6), (3, 10)]
SIZE = (20, 12, 10)


def _random_weight_regions() -> list[Region]:
    generator = torch.Generator().manual_seed(7)
    regions = []
    for region in grid_regions(FRAME_SPANS, ROW_SPANS, COL_SPANS, SIZE, "cut"):
        shape = (region.frames.stop - region.frames.start, region.rows.stop - region.rows.start, region.cols.stop - region.cols.start)
        regions.append(Region(region.frames, region.rows, region.cols, torch.rand(shape, generator=generator) + 0.05))
    return regions


@pytest.mark.parametrize("weighting", ["cut", "cosine", "linear", "random"])
def test_chunked_and_tiled_sampling_of_a_local_denoiser_equals_whole_video_sampling(toy_v, weighting):
    generator = torch.Generator().manual_seed(3)
    hint = torch.randn(1, 4, *SIZE, generator=generator)
    y, y_neg = torch.randn(2, 1, 77, 8, generator=generator)
    # guidance rescale takes a std over each region, which is not local for a general network: off here.
    settings = SamplerSettings(guide_rescale=0.0)
    whole = grid_regions([(0, SIZE[0])], [(0, SIZE[1])], [(0, SIZE[2])], SIZE)
    regions = _random_weight_regions() if weighting == "random" else grid_regions(FRAME_SPANS, ROW_SPANS, COL_SPANS, SIZE, weighting)
    expected = sample_window(toy_v, hint, y, y_neg, whole, settings, seed=11)
    got = sample_window(toy_v, hint, y, y_neg, regions, settings, seed=11)
    assert (got - expected).abs().max() < 1e-5

"""The plan's rules: the UNet size rule against the UNet's own geometry; bad options refused in one line."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from star_cli.errors import InputError
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.plan_rules import is_valid_latent_height, is_valid_latent_width, valid_latent_height, valid_latent_width


def survives_unet(h: int, w: int) -> bool:
    """Run STAR's resampling geometry: 3 stride-2 convs padded (2, 1), nearest x2 ups dropping first/last row."""
    weight = torch.zeros(1, 1, 3, 3)
    skips = [torch.zeros(1, 1, h, w)]
    for _ in range(3):
        skips.append(F.conv2d(skips[-1], weight, stride=2, padding=(2, 1)))
    x = skips.pop()
    while skips:
        x = F.interpolate(x, scale_factor=2, mode="nearest")[:, :, 1:-1, :]
        if x.shape != skips.pop().shape:
            return False
    return True


def test_size_rule_matches_unet_geometry():
    for h in range(2, 50):
        assert is_valid_latent_height(h) == survives_unet(h, 16), h
    for w in range(8, 50):
        assert is_valid_latent_width(w) == survives_unet(10, w), w
    assert is_valid_latent_height(90) and is_valid_latent_width(160)
    assert is_valid_latent_height(122) and is_valid_latent_width(216)


def test_smallest_valid_sizes():
    assert [valid_latent_height(h) for h in (1, 2, 3, 10, 11, 120, 122)] == [2, 2, 10, 10, 18, 122, 122]
    assert [valid_latent_width(w) for w in (1, 8, 9, 213, 216)] == [8, 8, 16, 216, 216]


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(scale=0), "--scale"),
        (dict(scale=-2), "--scale"),
        (dict(scale=8.01), "--scale"),
        (dict(scale=float("nan")), "--scale"),
        (dict(chunk_len=1), "--chunk-len"),
        (dict(chunk_overlap=17), "overlap"),
        (dict(chunk_overlap=-1), "overlap"),
        (dict(blend="smooth"), "blend"),
        (dict(canvas="huge"), "canvas"),
        (dict(window_chunks=0), "window"),
        (dict(tile_size=(700, 1280)), "nearest valid: 720"),
        (dict(tile_size=(720, 1300)), "nearest valid: 720x1280"),
        (dict(tile_size=(720, 1260)), "nearest valid: 720x1280"),
        (dict(tile_overlap=100), "multiple of 8"),
        (dict(tile_size=(144, 128), tile_overlap=80), "twice the 80 px tile overlap"),
    ],
)
def test_bad_options_raise_one_line_input_error(kwargs, needle):
    with pytest.raises(InputError) as info:
        PlanOptions(**kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("tile", [(80, 80), (16, 64), (200, 100), (1000, 2000), (700, 1300)])
def test_the_suggested_tile_size_is_accepted_and_plans(tile):
    with pytest.raises(InputError) as info:
        PlanOptions(tile_size=tile)
    message = str(info.value)
    assert "(HxW)" in message
    suggested = tuple(int(v) for v in re.search(r"nearest valid: (\d+)x(\d+)", message).groups())
    smallest = tuple(int(v) for v in re.search(r"smallest: (\d+)x(\d+)", message).groups())
    for size in (suggested, smallest):
        plan = make_plan(2, 300, 400, PlanOptions(tile_size=size))  # 1200x1600 output: several tiles
        assert all(t.height * 8 <= size[0] and t.width * 8 <= size[1] for t in plan.tiles)

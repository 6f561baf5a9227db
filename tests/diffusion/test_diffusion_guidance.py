from __future__ import annotations

import pytest
import torch

from star_cli.diffusion.guidance import combine_guidance, model_x0_fn
from star_cli.diffusion.schedule import star_schedule, t_to_sigma
from star_cli.diffusion.tiled import grid_regions
from star_cli.diffusion.window import SamplerSettings, sample_window


class CountingDenoiser:
    """Wraps a v-network and records the batch size of every call."""

    def __init__(self, denoise):
        self.denoise = denoise
        self.batches: list[int] = []

    def __call__(self, x, t, y, h):
        self.batches.append(x.shape[0])
        return self.denoise(x, t, y, h)


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(4)
    hint = torch.randn(1, 4, 4, 5, 6, generator=generator)
    y, y_neg = torch.randn(2, 1, 77, 8, generator=generator)
    return hint, y, y_neg


def _run(denoise, inputs, **settings):
    hint, y, y_neg = inputs
    regions = grid_regions([(0, 4)], [(0, 5)], [(0, 6)], (4, 5, 6))
    return sample_window(denoise, hint, y, y_neg, regions, SamplerSettings(**settings), seed=0)


def test_guidance_scale_one_makes_one_call_per_step(toy_v, inputs):
    counting = CountingDenoiser(toy_v)
    _run(counting, inputs, guide_scale=1.0)
    assert counting.batches == [1] * 14


@pytest.mark.parametrize("batched", [False, True])
def test_guidance_runs_cond_and_uncond_separately_or_as_one_batch(toy_v, inputs, batched):
    counting = CountingDenoiser(toy_v)
    out = _run(counting, inputs, batch_guidance=batched)
    assert counting.batches == ([2] * 14 if batched else [1] * 28)
    assert torch.allclose(out, _run(toy_v, inputs), atol=1e-5)


def test_guidance_rescale_pulls_the_std_towards_the_conditional():
    generator = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 2, 3, 4, 4, 4, generator=generator)
    plain = combine_guidance(cond, uncond, 7.5, 0.0)
    assert torch.allclose(plain, uncond + 7.5 * (cond - uncond))
    full = combine_guidance(cond, uncond, 7.5, 1.0)
    assert torch.allclose(full.flatten(1).std(dim=1), cond.flatten(1).std(dim=1), rtol=1e-5)
    mixed = combine_guidance(cond, uncond, 7.5, 0.2)
    assert torch.allclose(mixed, 0.2 * full + 0.8 * plain, atol=1e-5)


def test_model_x0_fn_scales_the_input_and_uses_the_rounded_timestep():
    seen = {}

    def denoise(x, t, y, h):
        seen["x"], seen["t"] = x, t
        return torch.zeros_like(x)

    sigma = t_to_sigma(torch.tensor([454.4546])).item()
    x = torch.full((1, 4, 2, 2, 2), 3.0)
    x0 = model_x0_fn(denoise, torch.zeros(1, 77, 8), None, torch.zeros_like(x), guide_scale=1.0, guide_rescale=0.2)(x, sigma)
    assert seen["t"].tolist() == [454] and seen["t"].dtype == torch.long
    assert torch.allclose(seen["x"], x / (sigma**2 + 1) ** 0.5)
    assert torch.allclose(x0, star_schedule().alpha(torch.tensor(454)) * seen["x"])

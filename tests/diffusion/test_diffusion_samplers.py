from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from star_cli.diffusion.noise import SeededNoise, brownian_noise_sampler
from star_cli.diffusion.samplers import sample_dpmpp_2m_sde, sample_heun
from star_cli.diffusion.tiled import grid_regions
from star_cli.diffusion.window import SamplerSettings, noised_hint, sample_window
from star_cli.errors import StarError


def whole(latent: torch.Tensor):
    frames, height, width = latent.shape[2:]
    return grid_regions([(0, frames)], [(0, height)], [(0, width)], (frames, height, width))


@pytest.mark.parametrize(("mode", "steps"), [("fast", 15), ("normal", 20)])
def test_deterministic_outputs_match_reference(reference, toy_v, mode, steps):
    hint = reference["input.hint"]
    out = sample_window(
        toy_v, hint, reference["input.y"], reference["input.y_neg"], whole(hint),
        SamplerSettings(mode=mode, steps=steps, eta=0.0), seed=0, noised=reference["input.noised_lr"],
    )
    assert (out - reference[f"{mode}.output"]).abs().max() < 1e-4


def test_chunked_cut_output_matches_reference(reference, toy_v):
    hint = reference["chunked.input.hint"]
    frames, height, width = hint.shape[2:]
    regions = grid_regions([(0, 16), (8, 24), (16, 32), (24, 40)], [(0, height)], [(0, width)], (frames, height, width), "cut")
    out = sample_window(
        toy_v, hint, reference["input.y"], reference["input.y_neg"], regions,
        SamplerSettings(eta=0.0), seed=0, noised=reference["chunked.input.noised_lr"],
    )
    assert (out - reference["chunked.output"]).abs().max() < 1e-4


def _gaussian_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The exact x0 estimate for data ~ N(0, 1): its probability-flow ODE has a closed form."""
    return x / (1 + sigma**2)


@pytest.mark.parametrize("solver", [sample_heun, partial(sample_dpmpp_2m_sde, eta=0.0)])
def test_ode_solvers_converge_to_the_exact_probability_flow_at_second_order(solver):
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 20
    exact = x / math.sqrt(1 + 20**2)
    errors = []
    for steps in (40, 80, 160):
        sigmas = torch.cat([torch.logspace(math.log10(20), -3, steps, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
        errors.append(((solver(_gaussian_denoiser, x, sigmas) - exact).abs() / exact.abs()).max().item())
    assert errors[-1] < 3e-3
    assert all(3.5 < coarse / fine < 4.5 for coarse, fine in zip(errors, errors[1:]))


def test_sde_solver_samples_the_data_distribution():
    sigmas = SamplerSettings().sigmas()
    sigma_max = sigmas[0].item()
    x = torch.randn(1, 4, 8, 32, 32, generator=torch.Generator().manual_seed(1)) * math.sqrt(1 + sigma_max**2)
    noise = brownian_noise_sampler(x, sigmas[-2].item(), sigma_max, seed=3, window=0)
    out = sample_dpmpp_2m_sde(_gaussian_denoiser, x, sigmas, eta=1.0, noise_sampler=noise)
    assert abs(out.std().item() - 1.0) < 0.03
    assert abs(torch.corrcoef(torch.stack([out.flatten(), x.flatten()]))[0, 1].item()) < 0.5  # the noise mattered


def _small_run(toy_v, seed: int, window: int, solver: str = "dpmpp_2m_sde") -> torch.Tensor:
    hint = torch.randn(1, 4, 5, 6, 7, generator=torch.Generator().manual_seed(9))
    y = torch.randn(2, 1, 77, 8, generator=torch.Generator().manual_seed(8))
    return sample_window(toy_v, hint, y[0], y[1], whole(hint), SamplerSettings(solver=solver), seed=seed, window=window)


def test_seed_and_window_reproduce_a_run(toy_v):
    first = _small_run(toy_v, seed=5, window=2)
    assert torch.equal(first, _small_run(toy_v, seed=5, window=2))
    assert not torch.allclose(first, _small_run(toy_v, seed=6, window=2), atol=1e-3)
    assert not torch.allclose(first, _small_run(toy_v, seed=5, window=3), atol=1e-3)
    heun = _small_run(toy_v, seed=5, window=2, solver="heun")
    assert torch.equal(heun, _small_run(toy_v, seed=5, window=2, solver="heun"))


def test_start_noise_depends_only_on_seed_and_window():
    hint = torch.zeros(1, 4, 3, 4, 4)
    settings = SamplerSettings()
    start = noised_hint(hint, settings, SeededNoise(1, 0))
    assert torch.equal(start, noised_hint(hint, settings, SeededNoise(1, 0)))
    assert not torch.equal(start, noised_hint(hint, settings, SeededNoise(1, 1)))


def test_nan_in_a_step_is_a_star_error_naming_the_step():
    sigmas = SamplerSettings().sigmas()
    calls = []

    def breaks_at_third_call(x: torch.Tensor, sigma: float) -> torch.Tensor:
        calls.append(sigma)
        return x * math.nan if len(calls) == 3 else x * 0

    with pytest.raises(StarError, match=r"step 3/14"):
        sample_dpmpp_2m_sde(breaks_at_third_call, torch.ones(1, 4, 2, 3, 3), sigmas, eta=0.0)


def test_callback_sees_every_step():
    seen = []
    sample_heun(_gaussian_denoiser, torch.ones(3), [4.0, 2.0, 1.0, 0.0], callback=lambda i, n: seen.append((i, n)))
    assert seen == [(0, 3), (1, 3), (2, 3)]


def test_small_cache_brownian_noise_equals_torchsde_brownian_tree():
    import torchsde

    from star_cli.diffusion.noise import derive_seed

    x = torch.zeros(1, 4, 3, 10, 8)
    ours = brownian_noise_sampler(x, 0.01, 20.0, seed=3, window=1)
    tree = torchsde.BrownianTree(0.01, torch.zeros_like(x), 20.0, entropy=derive_seed(3, 1, 1))
    sigmas = [20.0, 10.0, 5.0, 1.0, 0.5, 0.1, 0.01]
    for sigma, sigma_next in zip(sigmas, sigmas[1:]):
        expected = tree(sigma_next, sigma) / (sigma - sigma_next) ** 0.5
        torch.testing.assert_close(ours(sigma, sigma_next), expected, rtol=0, atol=0)


@pytest.mark.parametrize("steps", [3, 4, 10, 15])
def test_brownian_queries_never_warn(steps):
    """torchsde warns 'Should have ta>=t0' when a float32 sigma lies below its rounded tree end."""
    import warnings

    sigmas = SamplerSettings(mode="normal", steps=steps).sigmas()
    positive = sigmas[sigmas > 0]
    sample = brownian_noise_sampler(torch.zeros(1, 1, 1, 1, 1), positive.min().item(), positive.max().item(), 0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for sigma, sigma_next in zip(sigmas.tolist(), sigmas.tolist()[1:]):
            if sigma_next > 0:
                sample(sigma, sigma_next)

"""The VP DPM-Solver++(2M) SDE of CogVideoX's reference on toy denoisers: draw order and zero-SNR edges."""

from __future__ import annotations

import pytest
import torch

from star_cli.diffusion.cogvideox_schedule import cogvideox_schedule
from star_cli.diffusion.samplers import sample_vp_dpmpp_2m_sde
from star_cli.errors import StarError


def test_draws_follow_the_reference_order():
    """One draw at step 0, two at steps 1..N-2 (the first discarded), none at the last step."""
    alphas = cogvideox_schedule().alphas
    calls: list[int] = []
    step = {"i": -1}

    def x0_fn(x: torch.Tensor, i: int) -> torch.Tensor:
        step["i"] = i
        return torch.zeros_like(x)

    def noise() -> torch.Tensor:
        calls.append(step["i"])
        return torch.zeros(2)

    sample_vp_dpmpp_2m_sde(x0_fn, torch.zeros(2), alphas, noise=noise)
    counts = [calls.count(i) for i in range(50)]
    assert counts == [1] + [2] * 48 + [0]


def test_discarded_draws_do_not_change_the_result():
    alphas = cogvideox_schedule(6).alphas
    torch.manual_seed(0)
    draws = [torch.randn(3) for _ in range(1 + 2 * 4)]
    used = iter(draws)
    replaced = iter([d if k == 0 or k % 2 == 0 else torch.full((3,), 99.0) for k, d in enumerate(draws)])

    def x0_fn(x: torch.Tensor, i: int) -> torch.Tensor:
        return 0.5 * x + 0.1

    a = sample_vp_dpmpp_2m_sde(x0_fn, torch.ones(3), alphas, noise=lambda: next(used))
    b = sample_vp_dpmpp_2m_sde(x0_fn, torch.ones(3), alphas, noise=lambda: next(replaced))
    assert torch.equal(a, b)


def test_zero_snr_first_step_and_final_estimate():
    """From alpha 0 the first step is alpha_1 * x0 + sigma_1 * noise whatever x is; the last step returns x0."""
    alphas = cogvideox_schedule().alphas
    target = torch.tensor([0.3, -0.7])
    eps = torch.tensor([1.0, 2.0])
    seen: list[torch.Tensor] = []

    def x0_fn(x: torch.Tensor, i: int) -> torch.Tensor:
        seen.append(x)
        return target

    result = sample_vp_dpmpp_2m_sde(x0_fn, torch.tensor([5.0, -5.0]), alphas, noise=lambda: eps)
    a1 = alphas[1]
    assert torch.allclose(seen[1], a1 * target + (1 - a1**2) ** 0.5 * eps, atol=1e-6)
    assert torch.equal(result, target)


def test_noise_free_states_follow_the_mean():
    """A denoiser that always says x0 = c, and no noise: every state is alpha_i * c (the 2M correction vanishes)."""
    alphas = cogvideox_schedule().alphas
    c = torch.tensor([0.25, -1.5])
    seen: list[torch.Tensor] = []

    def x0_fn(x: torch.Tensor, i: int) -> torch.Tensor:
        seen.append(x)
        return c

    sample_vp_dpmpp_2m_sde(x0_fn, torch.zeros(2), alphas, noise=lambda: torch.zeros(2))
    assert all(torch.allclose(x, alphas[i] * c, atol=1e-6) for i, x in enumerate(seen))


def test_non_finite_values_are_reported_with_the_step():
    def x0_fn(x: torch.Tensor, i: int) -> torch.Tensor:
        return torch.full_like(x, float("nan")) if i == 3 else x

    with pytest.raises(StarError, match="step 4/50"):
        sample_vp_dpmpp_2m_sde(x0_fn, torch.zeros(2), cogvideox_schedule().alphas, noise=lambda: torch.zeros(2))

from __future__ import annotations

import pytest
import torch

from star_cli.diffusion.schedule import (
    q_sample,
    sigma_to_t,
    solver_sigmas,
    solver_timesteps,
    star_schedule,
    t_to_sigma,
    v_to_x0,
    x0_eps_to_v,
)
from star_cli.errors import InputError


def test_schedule_matches_reference(reference):
    sigmas = star_schedule().sigmas
    assert sigmas.dtype == torch.float32
    assert torch.allclose(sigmas, reference["sigmas_1000"], rtol=0, atol=1e-6)
    assert sigmas[-1] == 1.0  # zero terminal SNR


@pytest.mark.parametrize(("mode", "steps"), [("fast", 15), ("normal", 20)])
def test_solver_sigmas_match_reference(reference, mode, steps):
    sigmas = solver_sigmas(mode, steps, 899, 0)
    expected = reference[f"{mode}.solver_sigmas"]
    assert sigmas.shape == expected.shape
    assert torch.allclose(sigmas, expected, rtol=1e-5, atol=0)


def test_fast_mode_spends_four_steps_above_500_and_drops_the_penultimate():
    timesteps = solver_timesteps("fast", 16, 899, 0)
    assert timesteps[:5].tolist() == [899, 799, 699, 599, 500]
    assert len(timesteps) == 15
    sigmas = solver_sigmas("fast", 15, 899, 0)
    assert len(sigmas) == 15 and sigmas[-1] == 0
    assert torch.allclose(sigmas[-2], t_to_sigma(timesteps[-2:-1])[0])  # t=90.1 jumps straight to 0


def test_sigma_and_timestep_conversions_are_inverse():
    t = torch.tensor([0.0, 1.5, 44.5455, 500.0, 899.0, 998.0])
    assert torch.allclose(sigma_to_t(t_to_sigma(t)), t, atol=1e-3)
    assert t_to_sigma(torch.tensor([999.0])).isinf().all()


def test_diffusing_the_hint_matches_reference(reference):
    t = torch.tensor([899])
    assert torch.allclose(q_sample(reference["input.hint"], t, reference["input.noise"]), reference["input.noised_lr"], atol=1e-6)


def test_v_x0_eps_conversions_round_trip():
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 2, 3, 4, 5, generator=generator), torch.randn(2, 2, 3, 4, 5, generator=generator)
    t = torch.tensor([10, 700])
    x_t = q_sample(x0, t, eps)
    v = x0_eps_to_v(x0, eps, t)
    assert torch.allclose(v_to_x0(v, x_t, t), x0, atol=1e-5)
    alpha, sigma = star_schedule().alpha(t), star_schedule().sigma(t)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(2))


@pytest.mark.parametrize(
    ("mode", "t_max", "t_min"), [("fast", 450, 0), ("fast", 899, 600), ("normal", 999, 0), ("normal", 100, 100), ("slow", 899, 0)]
)
def test_bad_timestep_ranges_are_input_errors(mode, t_max, t_min):
    with pytest.raises(InputError):
        solver_sigmas(mode, 15, t_max, t_min)

"""The reference's 50-step sampling run, replayed with its recorded random draws through our DiT and solver."""

from __future__ import annotations

import pytest
import torch

from star_cli.diffusion.cogvideox import cogvideox_x0_fn, sample_cogvideox
from star_cli.diffusion.samplers import sample_vp_dpmpp_2m_sde
from star_cli.diffusion.cogvideox_schedule import cogvideox_schedule

SAMPLER_BOUND = 1e-4  # fixture README section 6: anything through the 50-step sampler
SINGLE_BOUND = 1e-5  # one DiT evaluation (step 0)


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def free_run(tiny_dit, sampler_fixture, recorded_noise):
    """Our run from the recorded start and draws: (x entering each step, x0 of each step, v of step 0, result)."""
    xs: list[torch.Tensor] = []
    x0s: list[torch.Tensor] = []
    vs: list[torch.Tensor] = []

    def denoise(*args: torch.Tensor) -> torch.Tensor:
        v = tiny_dit(*args)
        vs.append(v)
        return v

    x0_fn = cogvideox_x0_fn(denoise, sampler_fixture["lr_latent"], sampler_fixture["context.cond"])

    def recording_x0_fn(x: torch.Tensor, step: int) -> torch.Tensor:
        xs.append(x)
        x0s.append(x0_fn(x, step))
        return x0s[-1]

    result = sample_vp_dpmpp_2m_sde(
        recording_x0_fn, sampler_fixture["init_noise"], cogvideox_schedule().alphas, noise=recorded_noise()
    )
    return xs, x0s, vs[0], result


def test_final_latent(free_run, sampler_fixture):
    assert _max_error(free_run[3], sampler_fixture["final_latent"]) < SAMPLER_BOUND


def test_every_step_follows_the_reference(free_run, sampler_fixture):
    xs, x0s, _, _ = free_run
    assert len(xs) == len(x0s) == 50
    x_error = max(_max_error(x, sampler_fixture[f"x.{i}"]) for i, x in enumerate(xs))
    x0_error = max(_max_error(x0, sampler_fixture[f"x0.{i}"]) for i, x0 in enumerate(x0s))
    assert x_error < SAMPLER_BOUND and x0_error < SAMPLER_BOUND, (x_error, x0_error)


def test_first_step_network_output_and_guided_x0(free_run, sampler_fixture):
    _, x0s, v0, _ = free_run
    assert _max_error(v0, sampler_fixture["v.0"]) < SINGLE_BOUND  # batch [uncond (zero context), cond]
    assert _max_error(x0s[0], sampler_fixture["x0.0"]) < SINGLE_BOUND


def test_negative_context_defaults_to_zeros_and_batching_is_optional(tiny_dit, sampler_fixture, recorded_noise):
    """Two separate network calls and an explicit zero negative give the batched run's result."""
    result = sample_cogvideox(
        tiny_dit,
        sampler_fixture["init_noise"],
        sampler_fixture["lr_latent"],
        sampler_fixture["context.cond"],
        sampler_fixture["context.uncond"],
        noise=recorded_noise(),
        batched=False,
    )
    assert torch.all(sampler_fixture["context.uncond"] == 0)
    assert _max_error(result, sampler_fixture["final_latent"]) < SAMPLER_BOUND

"""Validated `star upscale` options: the step count the plan budgets is what the sampler runs."""

from __future__ import annotations

import pytest
import torch

from star_cli.diffusion.samplers import sample_dpmpp_2m_sde, sample_heun
from star_cli.diffusion.window import SamplerSettings
from star_cli.pipeline.request import model_calls, parse_size, read_prompt, solver_mode
from star_cli.errors import InputError


@pytest.mark.parametrize("solver", ["dpmpp_2m_sde", "heun"])
@pytest.mark.parametrize("steps", [15, 8])
def test_model_calls_match_the_sampler(solver, steps):
    calls = []

    def x0_fn(x, sigma):
        calls.append(sigma)
        return x * 0.5

    sigmas = SamplerSettings(solver=solver, mode=solver_mode(steps), steps=steps, eta=0.0).sigmas()
    sampler = sample_dpmpp_2m_sde if solver == "dpmpp_2m_sde" else sample_heun
    extra = {"eta": 0.0} if solver == "dpmpp_2m_sde" else {}
    sampler(x0_fn, torch.ones(1, 4, 2, 10, 8), sigmas, **extra)
    assert len(calls) == model_calls(solver, steps)


def test_fifteen_steps_is_the_reference_fast_spacing_and_others_are_even():
    assert solver_mode(15) == "fast"
    assert solver_mode(30) == "normal"


@pytest.mark.parametrize("text", ["720", "720x", "axb", "-1x5"])
def test_bad_tile_sizes_are_refused(text):
    with pytest.raises(InputError, match="HEIGHTxWIDTH"):
        parse_size(text)


def test_tile_size_parses_height_by_width():
    assert parse_size(" 720 x 1280 ") == (720, 1280)


def test_torch_free_choice_lists_mirror_their_owners():
    from star_cli.diffusion.window import SOLVERS as sampler_solvers
    from star_cli.pipeline import request
    from star_cli.pipeline.colorfix import COLOR_FIX_MODES
    from star_cli.models.vae import DEFAULT_TILE_OVERLAP, QUANTIZE_MODES
    from star_cli.pipeline.engines.placement import DTYPES
    from star_cli.pipeline.plan_rules import VAE_TILE_OVERLAP

    assert request.QUANTIZE_MODES == QUANTIZE_MODES
    assert VAE_TILE_OVERLAP == DEFAULT_TILE_OVERLAP
    assert request.SOLVERS == sampler_solvers
    assert request.COLOR_FIXES == COLOR_FIX_MODES
    assert request.DTYPES == tuple(DTYPES)


def test_steps_bound_mirrors_the_schedule():
    from star_cli.diffusion.schedule import NUM_TIMESTEPS
    from star_cli.pipeline.request import MAX_STEPS

    assert MAX_STEPS == NUM_TIMESTEPS


def test_a_prompt_file_saved_with_a_byte_order_mark_reads_as_its_text(tmp_path):
    saved = tmp_path / "prompt.txt"
    saved.write_bytes("\ufeffa man walking on a beach\n".encode("utf-8"))
    assert read_prompt("", saved) == "a man walking on a beach"

"""The CogVideoX sampler's constants, bit for bit against the reference's (star-cogvideox-reference/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from star_cli.diffusion.cogvideox_schedule import cogvideox_schedule, dynamic_cfg_scale
from star_cli.errors import InputError

FIXTURE = Path("star-cogvideox-reference") / "cogvideox_sampler_tiny.safetensors"


@pytest.fixture(scope="module")
def reference(fixtures_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = fixtures_dir / FIXTURE
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with safe_open(path, "pt") as handle:
        names = ("timesteps", "alphas", "alphas_quantized", "alphas_quantized_index", "cfg_scales")
        return {n: handle.get_tensor(n) for n in names}, handle.metadata()


def test_tables_are_exact(reference):
    tensors, _ = reference
    schedule = cogvideox_schedule()
    for name in ("timesteps", "alphas", "alphas_quantized", "alphas_quantized_index"):
        ours = getattr(schedule, name)
        assert ours.dtype == tensors[name].dtype and torch.equal(ours, tensors[name]), name


def test_guidance_scales_are_the_reference_floats(reference):
    tensors, metadata = reference
    scales = cogvideox_schedule().cfg_scales
    assert list(scales) == json.loads(metadata["cfg_scales_float64"])
    assert torch.equal(torch.tensor(scales, dtype=torch.float32), tensors["cfg_scales"])


def test_shape_of_the_schedule():
    schedule = cogvideox_schedule()
    assert schedule.steps == 50 and schedule.timesteps[0] == 999 and schedule.timesteps[-1] == 19
    assert schedule.alphas[0] == 0 and schedule.alphas[-1] == 1
    assert torch.all(schedule.alphas[1:] > schedule.alphas[:-1])
    # the x0 alpha is the table entry t-1 instead of t for the low-noise steps
    assert (schedule.alphas_quantized_index == schedule.timesteps - 1).sum() == 11


def test_float64_cosine_matters():
    """At t=999 the base is (50-999)/50 = -18.98; its fifth power needs float64 for the reference's cosine."""
    assert dynamic_cfg_scale(999) == pytest.approx(2.291487174551452, abs=0)
    assert dynamic_cfg_scale(50) == 1.0


def test_bad_step_counts():
    with pytest.raises(InputError):
        cogvideox_schedule(0)
    assert cogvideox_schedule(10).steps == 10

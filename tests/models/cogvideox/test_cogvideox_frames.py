"""The reference's uint8 pre/post-processing steps, each from the fixture's own input."""

from __future__ import annotations

import pytest
import torch

from star_cli.models.cogvideox.frames import to_model_range, to_unit, unit_to_uint8, upscale_uint8
from star_cli.pipeline.colorfix import adain_color_fix

COLORFIX_BOUND = 1e-6


def _frames_tchw(frames_raw: torch.Tensor) -> torch.Tensor:
    return frames_raw.permute(0, 3, 1, 2)


def test_uint8_bicubic_and_model_range_are_exact(pipeline_fixture):
    lq_uint8 = upscale_uint8(_frames_tchw(pipeline_fixture["frames_raw"]), 4)
    assert lq_uint8.dtype == torch.uint8
    assert torch.equal(lq_uint8, pipeline_fixture["lq_uint8"])
    assert torch.equal(to_model_range(lq_uint8)[None], pipeline_fixture["lq"])
    assert torch.equal(to_model_range(_frames_tchw(pipeline_fixture["frames_raw"]))[None], pipeline_fixture["gt"])


def test_float_input_is_refused():
    with pytest.raises(TypeError):
        upscale_uint8(torch.zeros(1, 3, 4, 4), 4)


def test_adain_colour_fix_against_the_lr_frames(pipeline_fixture):
    """The pipeline's AdaIN (unbiased variance + 1e-5) is the reference's; it works in [-1, 1]."""
    fixed = adain_color_fix(pipeline_fixture["decoded"][0], pipeline_fixture["gt"][0])
    assert (to_unit(fixed) - pipeline_fixture["colorfixed"][0]).abs().max().item() < COLORFIX_BOUND


def test_clamp_to_unit_range():
    assert torch.equal(to_unit(torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0])), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_uint8_output_truncates(pipeline_fixture):
    frames = unit_to_uint8(pipeline_fixture["colorfixed"][0].permute(0, 2, 3, 1))
    assert torch.equal(frames, pipeline_fixture["frames_out"])
    assert unit_to_uint8(torch.tensor([0.999, 1.0, 0.0039])).tolist() == [254, 255, 0]

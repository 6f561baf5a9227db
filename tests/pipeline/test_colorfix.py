"""Colour correction against the LR input: AdaIN statistics and wavelet low frequencies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from star_cli.errors import InputError
from star_cli.pipeline.colorfix import COLOR_FIX_MODES, adain_color_fix, apply_color_fix, wavelet_color_fix


def frames(count: int, height: int, width: int, seed: int, low: float = -0.6, high: float = 0.6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, height, width, generator=generator) * (high - low) + low


def test_adain_undoes_a_per_channel_colour_cast():
    ref = frames(2, 24, 32, seed=0)
    gain = torch.tensor([0.5, 1.2, 0.8])[None, :, None, None]
    offset = torch.tensor([0.2, -0.1, 0.05])[None, :, None, None]
    torch.testing.assert_close(adain_color_fix(ref * gain + offset, ref), ref, atol=1e-3, rtol=0)


def test_adain_matches_each_frame_to_its_own_reference_frame_at_any_size():
    out = frames(3, 32, 48, seed=1)
    ref = frames(3, 8, 12, seed=2, low=-0.3, high=0.1)
    ref[1] += 0.3
    fixed = adain_color_fix(out, ref)
    assert fixed.shape == out.shape
    for index in range(3):
        for channel in range(3):
            torch.testing.assert_close(fixed[index, channel].mean(), ref[index, channel].mean(), atol=1e-4, rtol=0)
            torch.testing.assert_close(fixed[index, channel].std(), ref[index, channel].std(), atol=1e-3, rtol=0)


def test_adain_clamps_the_output_before_and_after():
    out = frames(1, 16, 16, seed=3, low=-2.0, high=2.0)
    ref = frames(1, 16, 16, seed=4, low=-1.0, high=1.0)
    fixed = adain_color_fix(out, ref)
    assert fixed.min() >= -1 and fixed.max() <= 1
    torch.testing.assert_close(fixed, adain_color_fix(out.clamp(-1, 1), ref))


def test_wavelet_replaces_low_frequencies_and_keeps_detail():
    ref = frames(2, 40, 40, seed=5)
    # A colour drift is pure low frequency: the fix removes it entirely.
    torch.testing.assert_close(wavelet_color_fix(ref + 0.25, ref), ref, atol=1e-5, rtol=0)
    # Fine detail (a one-pixel checkerboard) is high frequency: the fix keeps it.
    checker = (torch.arange(40)[:, None] + torch.arange(40)[None, :]) % 2 * 0.2 - 0.1
    fixed = wavelet_color_fix(ref + checker, ref)
    assert (fixed - ref).mul(checker).mean() > 0.5 * checker.pow(2).mean()


def test_wavelet_upsamples_a_small_reference_bilinearly():
    out = frames(1, 32, 32, seed=6)
    ref = frames(1, 8, 8, seed=7)
    upsampled = F.interpolate(ref, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(wavelet_color_fix(out, ref), wavelet_color_fix(out, upsampled))


def test_wavelet_handles_frames_smaller_than_its_widest_blur():
    fixed = wavelet_color_fix(frames(1, 6, 10, seed=8), frames(1, 6, 10, seed=9))
    assert fixed.shape == (1, 3, 6, 10) and torch.isfinite(fixed).all()


def test_results_keep_the_output_dtype():
    out, ref = frames(1, 16, 16, seed=10).half(), frames(1, 4, 4, seed=11)
    assert adain_color_fix(out, ref).dtype == torch.float16
    assert wavelet_color_fix(out, ref).dtype == torch.float16


def test_dispatch_by_mode():
    out, ref = frames(1, 16, 16, seed=12), frames(1, 16, 16, seed=13)
    assert COLOR_FIX_MODES == ("adain", "wavelet", "none")
    torch.testing.assert_close(apply_color_fix("adain", out, ref), adain_color_fix(out, ref))
    torch.testing.assert_close(apply_color_fix("wavelet", out, ref), wavelet_color_fix(out, ref))
    assert apply_color_fix("none", out, ref) is out
    with pytest.raises(InputError, match="adain"):
        apply_color_fix("histogram", out, ref)


def test_frame_counts_must_match():
    with pytest.raises(ValueError, match="matching"):
        adain_color_fix(frames(2, 8, 8, seed=14), frames(3, 8, 8, seed=15))


@pytest.mark.parametrize("fix", [adain_color_fix, wavelet_color_fix], ids=["adain", "wavelet"])
@pytest.mark.parametrize("ref_size", [(1, 1), (1, 2), (3, 1)], ids=["1px", "1x2", "3x1"])
def test_tiny_and_flat_references_keep_their_colour_without_nan_or_warnings(fix, ref_size, recwarn):
    colour = torch.tensor([0.3, -0.5, 0.7])[None, :, None, None]
    ref = colour.expand(2, 3, *ref_size).clone()
    out = frames(2, 4, 4, seed=5)
    fixed = fix(out, ref)
    assert torch.isfinite(fixed).all()
    if fix is adain_color_fix:  # a flat reference gives a flat output, within the reference's eps (2/255 here)
        torch.testing.assert_close(fixed, colour.expand_as(fixed), atol=4 / 255, rtol=0)
    assert not [str(w.message) for w in recwarn]


def test_flat_output_frame_takes_the_reference_colour():
    ref = frames(1, 5, 5, seed=6)
    flat = torch.full((1, 3, 8, 8), 0.2)
    fixed = adain_color_fix(flat, ref)
    torch.testing.assert_close(fixed.mean((2, 3)), ref.mean((2, 3)), atol=1e-4, rtol=0)
    assert torch.isfinite(fixed).all()

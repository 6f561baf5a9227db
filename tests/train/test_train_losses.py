"""The v + Dynamic Frequency objective: weights, band split, per-sample combination."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from star_cli.train.config import LossConfig
from star_cli.train.losses import b_weight, c_weight, df_terms, radial_lowpass, split_bands, training_loss


def _video(seed: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 2, 16, 24, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_timestep_weights() -> None:
    t = torch.tensor([0, 999, 500])
    assert c_weight(t, 2.0).tolist() == pytest.approx([0.0, 1.0, (500 / 999) ** 2])
    assert b_weight(t, 1.0).tolist() == pytest.approx([1.0, 0.0, 1 - 500 / 999])


def test_radial_filter_keeps_low_and_drops_high_frequencies() -> None:
    psi = radial_lowpass(16, 24, cutoff=0.25)
    assert psi.shape == (16, 13) and psi[0, 0] == 1  # DC is low
    assert psi[8, 12] == 0 and psi[0, 12] == 0  # Nyquist is high
    assert radial_lowpass(16, 24, cutoff=1.0)[0, 12] == 1


@pytest.mark.parametrize("split", ["radial", "quantile"])
def test_bands_add_up_to_the_spectrum(split: str) -> None:
    frames = _video(0).transpose(1, 2).flatten(0, 1)
    low, high = split_bands(frames, LossConfig(split=split))
    spectrum = torch.view_as_real(torch.fft.rfft2(frames))
    assert torch.allclose(low + high, spectrum, atol=1e-4)
    assert low.abs().sum() > 0 and high.abs().sum() > 0


def test_blur_costs_high_frequencies_more_than_low() -> None:
    sharp = _video(1)
    blurred = torch.nn.functional.avg_pool3d(sharp, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    low, high = df_terms(blurred, sharp, LossConfig())
    assert (high > 2 * low).all()
    zero_low, zero_high = df_terms(sharp, sharp, LossConfig())
    assert zero_low.abs().max() == 0 and zero_high.abs().max() == 0


def test_objective_combines_per_sample() -> None:
    cfg = LossConfig(df_weight=0.5, beta=2.0, alpha=1.0)
    v_pred, v_true = torch.zeros(2, 4, 2, 3, 3), torch.ones(2, 4, 2, 3, 3)
    pred, gt = _video(2), _video(3)
    t = torch.tensor([999, 0])
    terms = training_loss(v_pred, v_true, t, cfg, pred, gt)
    low, high = df_terms(pred, gt, cfg)
    # t=999: b=0 (no DF at all); t=0: b=2, c=0 (high band only).
    expected = ((1.0 + 0.0) + (1.0 + 2.0 * 0.5 * high[1])) / 2
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms.v.item() == 1.0
    v_only = training_loss(v_pred, v_true, t, dataclasses.replace(cfg, df_weight=0.0))
    assert v_only.total.item() == 1.0 and v_only.df.item() == 0.0

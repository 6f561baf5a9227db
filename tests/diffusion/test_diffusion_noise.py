"""Noise sources: seeded draws depend on (seed, window) only; recorded draws come back where they were drawn."""

from __future__ import annotations

import pytest
import torch

from star_cli.diffusion.noise import RecordedNoise, SeededNoise


def test_seeded_posterior_draws_are_reproducible_per_window():
    like = torch.zeros(1, 4, 3, 5)
    first = SeededNoise(7, 0).posterior(0, like)
    again = SeededNoise(7, 0)
    assert torch.equal(again.posterior(0, like), first)
    assert not torch.equal(again.posterior(1, like), first)  # the next frame draws on
    assert not torch.equal(SeededNoise(7, 1).posterior(0, like), first)


def test_recorded_noise_replays_in_order_and_checks_shapes():
    posterior, start = torch.randn(2, 4, 3, 5), torch.randn(1, 4, 2, 3, 5)
    steps = [torch.randn(1, 4, 2, 3, 5) for _ in range(2)]
    noise = RecordedNoise(posterior, start, steps)
    assert torch.equal(noise.posterior(1, torch.zeros(1, 4, 3, 5)), posterior[1:2])
    assert torch.equal(noise.start((1, 4, 2, 3, 5), "cpu"), start)
    sampler = noise.sde(torch.zeros(1, 4, 2, 3, 5), 0.1, 10.0)
    assert torch.equal(sampler(10.0, 1.0), steps[0]) and torch.equal(sampler(1.0, 0.1), steps[1])
    with pytest.raises(ValueError, match="only 2 SDE noise tensors"):
        sampler(0.1, 0.05)
    with pytest.raises(ValueError, match="start noise is"):
        noise.start((1, 4, 3, 3, 5), "cpu")

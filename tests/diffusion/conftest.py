"""Shared pieces for the diffusion tests: the reference fixture and its toy network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURE_NAME = Path("star-reference") / "sampler_reference.safetensors"


def _toy_v(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    steps = t.float().view(-1, 1, 1, 1, 1)
    return 0.6 * x - 0.4 * h * (1 - steps / 1000) + 0.05 * torch.tanh(x * h) + y.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)


@pytest.fixture(scope="session")
def toy_v():
    """The fixture README's toy v-network; pointwise in x and h, so local in time and space."""
    return _toy_v


@pytest.fixture(scope="session")
def reference(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    """The fixture README's sampler inputs and outputs (star-reference/sampler_reference.safetensors)."""
    return load_file(fixtures_dir / FIXTURE_NAME)

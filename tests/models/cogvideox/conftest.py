"""The STAR CogVideoX golden fixtures (star-cogvideox-reference/) and the tiny models they hold.

Everything is loaded once per session: the tiny VAE decode is the slow part (seconds).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX
from safetensors import safe_open
from safetensors.torch import load_file

from star_cli.models.cogvideox import STARCogVideoXTransformer, from_sat_state_dict
from star_cli.models.cogvideox.vae import convert_sat_vae_state_dict

FOLDER = "star-cogvideox-reference"


class Fixture(dict):
    """A fixture file's tensors by name, plus its metadata (JSON values decoded) as `.meta`."""

    meta: dict[str, object]


def _load(fixtures_dir: Path, name: str) -> Fixture:
    path = fixtures_dir / FOLDER / f"cogvideox_{name}_tiny.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    tensors = Fixture(load_file(path))
    with safe_open(path, "pt") as handle:
        raw = handle.metadata()
    tensors.meta = {}
    for key, value in raw.items():
        try:
            tensors.meta[key] = json.loads(value)
        except ValueError:
            tensors.meta[key] = value
    return tensors


@pytest.fixture(scope="session")
def dit_fixture(fixtures_dir: Path) -> Fixture:
    return _load(fixtures_dir, "dit")


@pytest.fixture(scope="session")
def sampler_fixture(fixtures_dir: Path) -> Fixture:
    return _load(fixtures_dir, "sampler")


@pytest.fixture(scope="session")
def vae_fixture(fixtures_dir: Path) -> Fixture:
    return _load(fixtures_dir, "vae")


@pytest.fixture(scope="session")
def pipeline_fixture(fixtures_dir: Path) -> Fixture:
    return _load(fixtures_dir, "pipeline")


@pytest.fixture(scope="session")
def dit_config(dit_fixture: Fixture) -> dict[str, object]:
    """The fixture's `diffusers_config` without its note about the final norm (our model sets that itself)."""
    return {k: v for k, v in dit_fixture.meta["diffusers_config"].items() if not k.startswith("_")}


@pytest.fixture(scope="session")
def sat_state_dict(dit_fixture: Fixture) -> dict[str, torch.Tensor]:
    """The DiT in the reference's SAT names, with the `model.diffusion_model.` prefix, LoRA unmerged."""
    return {k: v for k, v in dit_fixture.items() if k.startswith("model.diffusion_model.")}


@pytest.fixture(scope="session")
def tiny_dit(sat_state_dict: dict[str, torch.Tensor], dit_config: dict[str, object]) -> STARCogVideoXTransformer:
    return from_sat_state_dict(sat_state_dict, **dit_config)


@pytest.fixture(scope="session")
def tiny_vae(vae_fixture: Fixture) -> AutoencoderKLCogVideoX:
    vae = AutoencoderKLCogVideoX(**vae_fixture.meta["diffusers_config"])
    sat = {k: v for k, v in vae_fixture.items() if k.startswith(("encoder.", "decoder."))}
    vae.load_state_dict(dict(convert_sat_vae_state_dict(sat)), strict=True)
    return vae.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def recorded_noise(sampler_fixture: Fixture) -> Callable[[], Callable[[], torch.Tensor]]:
    """A fresh `noise()` replaying the sampler's recorded draws in the reference's order."""
    names = [n for n in sampler_fixture.meta["draw_order"] if n.startswith("noise.")]

    def make() -> Callable[[], torch.Tensor]:
        draws: Iterator[torch.Tensor] = iter([sampler_fixture[n] for n in names])
        return lambda: next(draws)

    return make

"""STARUNet against the reference: the checkpoint manifest, and recorded forward passes of tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from star_cli.models import STARConfig, STARUNet
from star_cli.models.loading import compare_keys

TOLERANCE = 5e-5


@pytest.fixture(scope="module")
def reference_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "star-reference"


@pytest.fixture(scope="module")
def manifest(reference_dir: Path) -> dict:
    return json.loads((reference_dir / "star_i2vgenxl_unet_manifest.json").read_text())


def load_fixture(folder: Path, name: str) -> tuple[STARUNet, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model with the fixture's fp16 weights cast to fp32, inputs, outputs)."""
    with safe_open(folder / f"unet_tiny_{name}.safetensors", framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = {k: json.loads(v) for k, v in meta.items() if k != "num_params"}
    model = STARUNet(**config).eval()
    weights = {k.removeprefix("weights."): v.float() for k, v in tensors.items() if k.startswith("weights.")}
    model.load_state_dict(weights, strict=True)
    assert sum(p.numel() for p in model.parameters()) == int(meta["num_params"])
    inputs = {k.removeprefix("input."): v for k, v in tensors.items() if k.startswith("input.")}
    outputs = {k.removeprefix("output."): v for k, v in tensors.items() if k.startswith("output.")}
    return model, inputs, outputs


@pytest.fixture(scope="module")
def full_meta_model() -> STARUNet:
    with torch.device("meta"):
        return STARUNet()


@pytest.fixture(scope="module")
def tiny_a(reference_dir: Path) -> tuple[STARUNet, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return load_fixture(reference_dir, "a")


@pytest.fixture(scope="module")
def tiny_b(reference_dir: Path) -> tuple[STARUNet, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return load_fixture(reference_dir, "b")


@pytest.mark.parametrize("fixture", ["tiny_a", "tiny_b"])
def test_matches_reference_output_and_control(fixture: str, request: pytest.FixtureRequest) -> None:
    model, inputs, outputs = request.getfixturevalue(fixture)
    x, t, y, hint = inputs["x"], inputs["t"], inputs["y"], inputs["hint"]
    with torch.no_grad():
        v = model(x, t, y, hint=hint)
        control = model.VideoControlNet(x, t, y, hint)

    assert v.shape == outputs["v"].shape
    assert (v - outputs["v"]).abs().max().item() < TOLERANCE
    expected = [outputs[f"control.{i}"] for i in range(len(control))]
    assert len(control) == sum(k.startswith("control.") for k in outputs)
    for got, want in zip(control, expected):
        assert got.shape == want.shape
        assert (got - want).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_forward_is_finite_and_close(
    dtype: torch.dtype, tiny_a: tuple[STARUNet, dict[str, torch.Tensor], dict[str, torch.Tensor]]
) -> None:
    model, inputs, outputs = tiny_a
    half = STARUNet(**model.config.to_dict()).eval()
    half.load_state_dict(model.state_dict())
    half.to(dtype)
    with torch.no_grad():
        v = half(inputs["x"], inputs["t"], inputs["y"], hint=inputs["hint"])

    assert v.dtype == inputs["x"].dtype  # runs in the weights' dtype, answers in the caller's
    assert torch.isfinite(v).all()
    scale = outputs["v"].abs().max().item()
    assert (v - outputs["v"]).abs().max().item() < 0.02 * scale


def test_state_dict_names_and_shapes_are_the_official_checkpoints(full_meta_model: STARUNet, manifest: dict) -> None:
    state = full_meta_model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == manifest["tensors"]
    assert sum(v.numel() for v in state.values()) == manifest["num_params"] == 2_041_121_910
    controlnet = sum(v.numel() for k, v in state.items() if k.startswith("VideoControlNet."))
    assert controlnet == manifest["num_params_controlnet"]


def test_manifest_shaped_state_dict_loads_strictly(full_meta_model: STARUNet, manifest: dict) -> None:
    official = {k: torch.empty(shape, device="meta") for k, shape in manifest["tensors"].items()}
    assert not compare_keys(full_meta_model, official)
    with torch.device("meta"):
        model = STARUNet()
    result = model.load_state_dict(official, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_full_size_defaults_and_iterable_blocks(full_meta_model: STARUNet) -> None:
    assert full_meta_model.config == STARConfig(
        dim=320, head_dim=64, num_heads=8, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
        context_dim=1024, in_dim=4, out_dim=4,
    )
    assert len(full_meta_model.input_blocks) == 12 and len(full_meta_model.output_blocks) == 12
    assert len(full_meta_model.middle_block) == 4
    assert isinstance(full_meta_model.VideoControlNet.input_blocks, nn.ModuleList)

"""Reading STAR weights: formats, wrappers, strictness, dtype casting, unsafe pickles."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from star_cli.errors import StarError
from star_cli.models import STARConfig, STARUNet
from star_cli.models.loading import (
    load_star_unet,
    read_star_config,
    read_state_dict,
    save_star_unet,
    star_config_of,
)

TINY = dict(dim=32, head_dim=16, num_heads=2, dim_mult=(1, 2), num_res_blocks=1, context_dim=24)


@pytest.fixture(scope="module")
def tiny_model() -> STARUNet:
    torch.manual_seed(0)
    return STARUNet(**TINY)


def assert_same_weights(a: STARUNet, b: STARUNet) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key].to(sb[key].dtype), sb[key]), key


def test_safetensors_round_trip_keeps_config_and_casts(tiny_model: STARUNet, tmp_path: Path) -> None:
    path = save_star_unet(tiny_model, tmp_path / "tiny.safetensors", dtype=torch.float16)
    with safe_open(path, framework="pt") as f:
        assert json.loads(f.metadata()["star_config"]) == star_config_of(tiny_model)
        assert f.get_tensor("out.2.bias").dtype == torch.float16
    assert read_star_config(path) == STARConfig(**TINY)

    loaded = load_star_unet(path, dtype=torch.float32)
    assert loaded.config == tiny_model.config and not loaded.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in loaded.parameters())
    assert_same_weights(tiny_model.half(), loaded.half())
    tiny_model.float()
    assert list(tmp_path.iterdir()) == [path]  # nothing left behind by the atomic write


@pytest.mark.parametrize("zipped", [True, False])
def test_official_style_pt_with_state_dict_wrapper_loads(
    tiny_model: STARUNet, tmp_path: Path, zipped: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "light_deg.pt"
    torch.save({"state_dict": tiny_model.state_dict()}, path, _use_new_zipfile_serialization=zipped)
    assert read_state_dict(path).keys() == tiny_model.state_dict().keys()
    # .pt files carry no config: the architecture defaults to full size, so point the
    # default at the tiny one to load without building 2B parameters.
    monkeypatch.setattr("star_cli.models.loading.read_star_config", lambda _: STARConfig(**TINY))
    loaded = load_star_unet(path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    assert_same_weights(tiny_model.bfloat16(), loaded)
    tiny_model.float()


def test_pt_files_default_to_the_full_size_config(tmp_path: Path) -> None:
    path = tmp_path / "heavy_deg.pth"
    torch.save({"a": torch.zeros(1)}, path)
    assert read_star_config(path) == STARConfig()


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(StarError, match="refused: the file is not a plain tensor checkpoint"):
        read_state_dict(path)
    assert not marker.exists()


def test_mismatches_are_named_and_fail(tiny_model: STARUNet, tmp_path: Path) -> None:
    state = dict(tiny_model.state_dict())
    del state["out.2.bias"]
    state["VideoControlNet.extra.weight"] = torch.zeros(3)
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path), metadata={"star_config": json.dumps(star_config_of(tiny_model))})
    with pytest.raises(StarError, match=r"1 missing \(out\.2\.bias\); 1 unexpected \(VideoControlNet\.extra\.weight\)"):
        load_star_unet(path)


def test_non_strict_load_keeps_fresh_values_for_missing_tensors(
    tiny_model: STARUNet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = {k: v for k, v in tiny_model.state_dict().items() if not k.startswith("VideoControlNet.")}
    state["unused"] = torch.zeros(2)
    path = tmp_path / "unet_only.safetensors"
    save_file(state, str(path), metadata={"star_config": json.dumps(star_config_of(tiny_model))})
    with caplog.at_level(logging.WARNING):
        loaded = load_star_unet(path, strict=False)
    assert "missing" in caplog.text and "unused" in caplog.text
    assert torch.equal(loaded.out[2].weight, tiny_model.out[2].weight)
    assert not any(p.is_meta for p in loaded.parameters())


def test_wrong_shapes_fail_even_when_not_strict(tiny_model: STARUNet, tmp_path: Path) -> None:
    state = dict(tiny_model.state_dict())
    state["out.2.bias"] = torch.zeros(7)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={"star_config": json.dumps(star_config_of(tiny_model))})
    with pytest.raises(StarError, match=r"out\.2\.bias: \[7\] in file, \[4\] expected"):
        load_star_unet(path, strict=False)


def test_a_model_of_another_size_names_the_expected_config(tiny_model: STARUNet, tmp_path: Path) -> None:
    path = tmp_path / "tiny_without_config.safetensors"
    save_file(dict(tiny_model.state_dict()), str(path))  # no star_config: the full size is expected
    with pytest.raises(StarError, match=r"another model size than expected: expected dim=320, dim_mult=\[1, 2, 4, 4\], "
                                        r"context_dim=1024 \(no star_config metadata, so the released full size\); found"):
        load_star_unet(path)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.safetensors", None, "not found"),
        ("weights.bin", b"x", "unknown weights format"),
        ("broken.safetensors", b"\x05\x00\x00\x00\x00\x00\x00\x00hello", "not a readable safetensors"),
        ("broken.pt", b"hello world", "not a readable PyTorch checkpoint"),
    ],
)
def test_unreadable_files_give_one_line_errors(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StarError, match=message) as info:
        read_state_dict(path)
    assert "\n" not in str(info.value)


def test_a_pickle_of_something_else_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(StarError, match="not a state dict"):
        read_state_dict(path)

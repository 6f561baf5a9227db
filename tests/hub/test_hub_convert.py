"""STAR pickle -> fp16 safetensors: strict against the model, safe against code, loadable by inference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hub_release import TINY_STAR
from safetensors import safe_open
from safetensors.torch import load_file

from star_cli.errors import StarError
from star_cli.hub.convert import convert_star_checkpoint
from star_cli.hub.layout import converted_source
from star_cli.models.loading import load_star_unet

SHA = "ab" * 32
UNET_MANIFEST = "star-reference/star_i2vgenxl_unet_manifest.json"


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    from star_cli.models import STARUNet

    torch.manual_seed(0)
    return STARUNet(**TINY_STAR).state_dict()


def test_conversion_writes_fp16_with_config_and_provenance(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    src, dest = tmp_path / "light_deg.pt", tmp_path / "star" / "light_deg.safetensors"
    torch.save({"state_dict": state}, src)
    convert_star_checkpoint(src, dest, config=TINY_STAR, source_sha256=SHA)
    out = load_file(dest)
    assert out.keys() == state.keys()
    assert all(out[k].dtype == (torch.float16 if v.is_floating_point() else v.dtype) for k, v in state.items())
    assert all(torch.equal(out[k], v.half() if v.is_floating_point() else v) for k, v in state.items())
    with safe_open(dest, framework="pt") as handle:
        assert json.loads(handle.metadata()["star_config"])["dim_mult"] == [1]
    assert converted_source(dest) == SHA
    assert converted_source(src) is None
    model = load_star_unet(dest)
    assert model.config.num_res_blocks == TINY_STAR["num_res_blocks"]
    assert [p.name for p in dest.parent.iterdir()] == ["light_deg.safetensors"]  # no temp file left


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop(next(iter(s))), "1 missing"),
        (lambda s: s.update({f"extra.{i}": torch.zeros(2) for i in range(17)}), r"17 unexpected \(extra.0"),
        (lambda s: s.__setitem__(next(iter(s)), torch.zeros(3, 3)), "1 with the wrong shape"),
    ],
)
def test_keys_and_shapes_must_match_the_model_exactly(state: dict[str, torch.Tensor], tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    changed = dict(state)
    edit(changed)
    src, dest = tmp_path / "light_deg.pt", tmp_path / "out.safetensors"
    torch.save(changed, src)
    with pytest.raises(StarError, match=f"light_deg.pt does not fit the STAR model built from .*{message}"):
        convert_star_checkpoint(src, dest, config=TINY_STAR, source_sha256=SHA)
    assert not dest.exists()


def test_full_size_config_is_the_default_and_tiny_weights_do_not_fit_it(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    src = tmp_path / "light_deg.pt"
    torch.save(state, src)
    with pytest.raises(StarError, match="built from the full-size defaults: .* with the wrong shape"):
        convert_star_checkpoint(src, tmp_path / "out.safetensors", config={}, source_sha256=SHA)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "light_deg.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _Payload(str(marker))}, src)
    with pytest.raises(StarError, match="refused"):
        convert_star_checkpoint(src, tmp_path / "out.safetensors", config=TINY_STAR, source_sha256=SHA)
    assert not marker.exists()


def test_bad_config_in_the_sources_is_one_line(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    src = tmp_path / "light_deg.pt"
    torch.save(state, src)
    with pytest.raises(StarError, match="STAR config .* does not build a model"):
        convert_star_checkpoint(src, tmp_path / "out.safetensors", config={"width": 3}, source_sha256=SHA)


def test_default_config_expects_exactly_the_official_checkpoint_tensors(fixtures_dir: Path) -> None:
    """The shipped sources leave [star.config] empty: the strict check must then accept the
    official light/heavy_deg.pt, whose names and shapes the reference manifest lists."""
    from star_cli.hub.convert import meta_model
    from star_cli.hub.sources import load_sources
    from star_cli.models.loading import compare_keys

    manifest = json.loads((fixtures_dir / UNET_MANIFEST).read_text())
    official = {name: torch.empty(shape, device="meta") for name, shape in manifest["tensors"].items()}
    (star,) = [c for c in load_sources().components if c.name == "star"]
    assert star.config == {}
    assert not compare_keys(meta_model(star.config), official)


def test_checkpoints_as_they_ship_are_unwrapped_and_leftovers_dropped(state, tmp_path: Path, caplog) -> None:
    """`module.` prefix inside a `state_dict` wrapper, plus two training leftovers: converted, leftovers named."""
    leftovers = {"VideoControlNet.scale_cond.0.weight": torch.zeros(4), "hint_time_zero_linear.bias": torch.zeros(4)}
    shipped = {"state_dict": {f"module.{k}": v for k, v in {**state, **leftovers}.items()}}
    src, dest = tmp_path / "light_deg.pt", tmp_path / "star" / "light_deg.safetensors"
    torch.save(shipped, src)
    with caplog.at_level("WARNING"):
        dropped = convert_star_checkpoint(src, dest, config=TINY_STAR, source_sha256=SHA)
    assert sorted(dropped) == sorted(leftovers)
    assert "VideoControlNet.scale_cond.0.weight" in caplog.text
    model = load_star_unet(dest)
    key = next(iter(state))
    torch.testing.assert_close(model.state_dict()[key].float(), state[key].half().float())

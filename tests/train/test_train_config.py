"""The training config: the shipped example documents every key with its default; bad input is one line."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from star_cli.errors import InputError
from star_cli.train.config import Config, DataConfig, TrainConfig
from star_cli.train.config_file import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "train.example.toml"
MINIMAL = '[data]\nroot = "clips"\n[train]\noutput_dir = "run"\n'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_shows_the_defaults() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg == Config(data=DataConfig(root=cfg.data.root), train=TrainConfig(output_dir=cfg.train.output_dir))


def _sections(text: str) -> dict[str, str]:
    """TOML text per [section] header."""
    parts = re.split(r"^\[([\w.]+)\]\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _documented(cls: type, prefix: str, sections: dict[str, str]) -> list[str]:
    """Dotted keys of `cls` that the example neither sets nor shows commented out."""
    missing = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = f"{prefix}.{field.name}"
        if dataclasses.is_dataclass(hints[field.name]):
            missing += _documented(hints[field.name], key, sections)
        elif not re.search(rf"^#?\s*{field.name}\s*=", sections.get(prefix, ""), flags=re.M):
            missing.append(key)
    return missing


def test_example_config_documents_every_key() -> None:
    sections = _sections(EXAMPLE.read_text(encoding="utf-8"))
    hints = typing.get_type_hints(Config)
    missing = [k for f in dataclasses.fields(Config) for k in _documented(hints[f.name], f.name, sections)]
    assert missing == []


def test_paths_are_relative_to_the_config_and_overrides_win(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL + "max_steps = 3\n"),
                      {"train.max_steps": 7, "optim.lr": None, "loss.split": "quantile"})
    assert cfg.data.root == tmp_path / "clips"
    assert cfg.train.max_steps == 7 and cfg.loss.split == "quantile"
    assert cfg.optim.lr == 5e-5  # None means "flag not given"


def test_preset_then_overrides(tmp_path: Path) -> None:
    text = MINIMAL + '[data.degradation]\npreset = "light"\n[data.degradation.compression]\ncrf_range = [20, 22]\n'
    deg = load_config(_write(tmp_path, text)).data.degradation
    assert deg.preset == "light" and not deg.second_stage
    assert deg.compression.crf_range == (20, 22) and deg.compression.bpp_range == (0.1, 0.6)


@pytest.mark.parametrize(
    ("extra", "overrides", "expected"),
    [
        ("[data.degradation.stage1]\nblur_sigmaa = [1, 2]\n", {}, "data.degradation.stage1.blur_sigmaa is not a known key"),
        ("[optim]\nlr = -1\n", {}, "optim.lr must be > 0"),
        ("", {"train.max_steps": "ten"}, "train.max_steps must be an integer (got 'ten')"),
        ("", {"data.crop_height": 100}, "data.crop_height must be a positive multiple of 8"),
        ("", {"loss.split": "octave"}, "loss.split must be 'radial' or 'quantile'"),
        ("", {"data.degradation.stage2.jpeg_range": [50, 20]}, "data.degradation.stage2.jpeg_range"),
        ("", {"data.degradation.compression.codecs": ["libx265"]}, "unknown codec 'libx265'"),
        ("", {"train.mixed_precision": "fp8"}, "train.mixed_precision must be"),
        ("", {"data.degradation.preset": "medium"}, "data.degradation.preset must be one of heavy, light"),
        ("", {"optim.betas": [0.9]}, "optim.betas must have 2 values"),
        ("", {"checkpoint.every": True}, "checkpoint.every must be an integer"),
    ],
)
def test_bad_values_give_one_clear_line(tmp_path: Path, extra: str, overrides: dict, expected: str) -> None:
    with pytest.raises(InputError) as info:
        load_config(_write(tmp_path, MINIMAL + extra), overrides)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "cfg.toml"))
    assert expected in message


def test_missing_required_key_and_broken_toml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="train.output_dir is required"):
        load_config(_write(tmp_path, '[data]\nroot = "x"\n'))
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(_write(tmp_path, "[data\n"))
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "absent.toml")

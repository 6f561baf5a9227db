"""The weights sources: the shipped data file, the override, and the checks on it."""

from __future__ import annotations

from pathlib import Path

import pytest

import star_cli
from star_cli.errors import StarError
from star_cli.hub.layout import required_files
from star_cli.hub.sources import load_sources, parse_sources

CANONICAL = Path(__file__).resolve().parents[2] / "weights" / "sources.toml"
MINIMAL = """
format = 1
[all]
repos = ["a/b"]
""" + "".join(f'[[all.files]]\npath = "{rel}"\ndest = "{rel}"\n' for rel in sorted(set(required_files("light")) | set(required_files("heavy"))))


def test_packaged_sources_are_the_canonical_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAR_WEIGHTS_SOURCES", raising=False)
    packaged = Path(star_cli.__file__).parent / "data" / "sources.toml"
    assert packaged.read_bytes() == CANONICAL.read_bytes()
    assert load_sources().origin == "star_cli/data/sources.toml"


def test_shipped_sources_pin_the_star_checkpoints_and_cover_the_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAR_WEIGHTS_SOURCES", raising=False)
    sources = load_sources()
    star = {f.variant: f for c in sources.components if c.name == "star" for f in c.files}
    assert star["light"].path == "I2VGen-XL-based/light_deg.pt" and star["light"].convert
    assert star["light"].sha256 == "537881f0276d858fae2cdc932534fcd823468b515ff1d3bf368c2db98792d3d5"
    assert star["heavy"].sha256 == "285e7903a561cadcc7426808987c0ac0352b3beb0351df10775bb90e6635a5e5"
    repos = {c.name: c.repos for c in sources.components}
    assert repos == {
        "star": ("SherryX/STAR",),
        "vae": ("stabilityai/stable-video-diffusion-img2vid", "stabilityai/stable-video-diffusion-img2vid-xt"),
        "text": ("ali-vilab/i2vgen-xl",),
        "star_cogvideox": ("SherryX/STAR",),
        "cogvideox": ("THUDM/CogVideoX-5b", "zai-org/CogVideoX-5b"),
    }
    light = {f.dest: f.path for _, f in sources.select(["light"])}
    assert sorted(light) == sorted(required_files("light"))
    assert light["vae/diffusion_pytorch_model.safetensors"] == "vae/diffusion_pytorch_model.fp16.safetensors"
    assert light["text_encoder/model.safetensors"] == "text_encoder/model.safetensors"  # float32, as the reference
    assert {c.name: c.mirrors for c in sources.components}["star"] == ("camenduru/STAR",)
    pinned = {f.dest: f.sha256 for _, f in sources.select(["light", "heavy"])}
    assert pinned["vae/diffusion_pytorch_model.safetensors"] == "af602cd0eb4ad6086ec94fbf1438dfb1be5ec9ac03fd0215640854e90d6463a3"
    assert pinned["vae/config.json"] is None  # the two SVD repos' copies differ in metadata
    assert sorted(f.dest for _, f in sources.select(["light", "heavy"])) == sorted(set(required_files("light")) | set(required_files("heavy")))


def test_environment_points_at_another_sources_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = tmp_path / "mine.toml"
    custom.write_text(MINIMAL)
    monkeypatch.setenv("STAR_WEIGHTS_SOURCES", str(custom))
    sources = load_sources()
    assert sources.origin == str(custom) and [c.repos for c in sources.components] == [("a/b",)]
    monkeypatch.setenv("STAR_WEIGHTS_SOURCES", str(tmp_path / "absent.toml"))
    with pytest.raises(StarError, match="cannot read weights sources .*absent.toml"):
        load_sources()


@pytest.mark.parametrize(
    "text, mistake",
    [
        (MINIMAL.replace("format = 1", ""), "`format = 1` is required"),
        (MINIMAL.replace('repos = ["a/b"]', 'repos = ["a/b"]\nmirror = "x"'), r"\[all\] needs `repos` and `files`"),
        (MINIMAL.replace('dest = "vae/config.json"', 'dest = "vae/config.json"\nsha256 = "ABC"'), "sha256 must be 64 lower-case hex"),
        (MINIMAL.replace('dest = "vae/config.json"', 'dest = "vae/config.json"\nvariant = "medium"'), "variant must be one of"),
        (MINIMAL.replace('dest = "vae/config.json"', 'dest = "tokenizer/vocab.json"'), "several files go to tokenizer/vocab.json"),
        (MINIMAL.replace('dest = "star/heavy_deg.safetensors"', 'dest = "star/other.safetensors"'), "no file goes to star/heavy_deg.safetensors, which the heavy variant needs"),
        ("format = 1\n[a\n", ""),  # not TOML
    ],
)
def test_mistakes_are_named(text: str, mistake: str) -> None:
    with pytest.raises(StarError, match=f"weights sources here are invalid: .*{mistake}"):
        parse_sources(text, "here")

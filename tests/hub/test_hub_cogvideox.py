"""`star download-weights --variant cogvideox`: SAT/DeepSpeed checkpoint -> one bf16 denoiser, plus the release's files."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fakehub import FakeHub
from hub_release import TINY_STAR, TinyRelease, sources_text, toml_inline
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import load_file

from star_cli.errors import StarError
from star_cli.hub import check_weights_dir, download_weights
from star_cli.hub.convert_sat import convert_sat_checkpoint
from star_cli.hub.layout import COGVIDEOX_DENOISER, COGVIDEOX_FILES, converted_source, required_files
from star_cli.hub.sources import parse_sources
from star_cli.models.cogvideox import STARCogVideoXTransformer, convert_sat_state_dict
from star_cli.testing.cogvideox_weights import TINY_DIT, TINY_NATIVE, sat_checkpoint

COG_STAR_REPO, COG_RELEASE_REPO = "test/STAR", "test/CogVideoX-5b"
SAT_PATH = "CogVideoX-5B-based/1/mp_rank_00_model_states.pt"
CONFIG = {"diffusers": TINY_DIT, "native": TINY_NATIVE}


def pickled(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def cog_sources(sha256: str | None = None) -> str:
    pin = f'sha256 = "{sha256}"\n' if sha256 else ""
    release = "".join(
        f'\n[[cogvideox.files]]\npath = "{rel.removeprefix("cogvideox/")}"\ndest = "{rel}"\nvariant = "cogvideox"\n'
        for rel in COGVIDEOX_FILES[1:]
    )
    return (
        f'\n[star_cogvideox]\nrepos = ["{COG_STAR_REPO}"]\n'
        f"[star_cogvideox.config]\ndiffusers = {toml_inline(TINY_DIT)}\nnative = {toml_inline(TINY_NATIVE)}\n"
        f'[[star_cogvideox.files]]\npath = "{SAT_PATH}"\ndest = "{COGVIDEOX_DENOISER}"\nvariant = "cogvideox"\nconvert = "sat"\n{pin}'
        f'\n[cogvideox]\nrepos = ["{COG_RELEASE_REPO}"]\n{release}'
    )


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    """A tiny SAT checkpoint as DeepSpeed writes it, with run state (numpy RNG) beside `module`."""
    torch.manual_seed(0)
    state = sat_checkpoint()
    state["np_rng_state"] = np.random.RandomState(0).get_state()
    return state


@pytest.fixture(scope="module")
def release_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from star_cli.testing import make_tiny_weights

    made = make_tiny_weights(tmp_path_factory.mktemp("cog"), variants=("cogvideox",))
    return {rel.removeprefix("cogvideox/"): (made / rel).read_bytes() for rel in COGVIDEOX_FILES[1:]}


def publish(hub: FakeHub, tiny_release: TinyRelease, sat: bytes, release_files: dict[str, bytes]) -> None:
    tiny_release.publish(hub)
    hub.add(COG_STAR_REPO, SAT_PATH, sat)
    for path, data in release_files.items():
        hub.add(COG_RELEASE_REPO, path, data)


def test_cogvideox_download_converts_the_dit_and_fetches_the_release(
    hub: FakeHub, tiny_release: TinyRelease, checkpoint: dict, release_files: dict[str, bytes], weights_dir: Path, quiet: Console
) -> None:
    sat = pickled(checkpoint)
    publish(hub, tiny_release, sat, release_files)
    sources = parse_sources(sources_text(TINY_STAR, tiny_release.star_sha256()) + cog_sources())
    download_weights("cogvideox", weights_dir, sources=sources, console=quiet)
    paths = check_weights_dir(weights_dir, "cogvideox", verify=True)
    assert not (weights_dir / "star").exists() and not (weights_dir / "original").exists()  # no I2VGen files, no pickle kept
    out = load_file(paths.star)
    expected = dict(convert_sat_state_dict(checkpoint["module"]))
    assert out.keys() == expected.keys()
    assert all(t.dtype == torch.bfloat16 and torch.equal(t, expected[k].to(torch.bfloat16)) for k, t in out.items())
    with safe_open(paths.star, framework="pt") as handle:
        assert json.loads(handle.metadata()["star_config"]) == json.loads(json.dumps(CONFIG))
    assert converted_source(paths.star) == hashlib.sha256(sat).hexdigest()
    with torch.device("meta"):
        model = STARCogVideoXTransformer(**TINY_DIT)
    model.load_state_dict(out, assign=True, strict=True)
    # the I2VGen-XL variants do not pull the CogVideoX files
    assert {f.dest for _, f in sources.select(["light", "heavy"])} == set(required_files("light")) | set(required_files("heavy"))


def test_a_missing_dit_key_is_named_and_nothing_is_written(checkpoint: dict, tmp_path: Path) -> None:
    module = dict(checkpoint["module"])
    missing = next(k for k in module if k.endswith("mixins.final_layer.linear.weight"))
    del module[missing]
    src, dest = tmp_path / "mp_rank_00_model_states.pt", tmp_path / "transformer.safetensors"
    torch.save({"module": module}, src)
    with pytest.raises(StarError, match="mixins.final_layer.linear.weight"):
        convert_sat_checkpoint(src, dest, config=CONFIG, source_sha256="ab" * 32)
    assert not dest.exists() and list(tmp_path.iterdir()) == [src]


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(checkpoint: dict, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": checkpoint["module"], "payload": _Payload(str(marker))}, src)
    with pytest.raises(StarError, match="refused.*system"):
        convert_sat_checkpoint(src, tmp_path / "out.safetensors", config=CONFIG, source_sha256="ab" * 32)
    assert not marker.exists()


def test_the_shipped_sources_describe_the_cogvideox_variant() -> None:
    from star_cli.hub.sources import load_sources

    sources = load_sources()
    files = sources.select(["cogvideox"])
    assert sorted(f.dest for _, f in files) == sorted(COGVIDEOX_FILES)
    (component, denoiser), = [(c, f) for c, f in files if f.convert]
    assert denoiser.convert == "sat" and component.repos[0] == "SherryX/STAR"
    assert component.config["native"] == {"height": 480, "width": 720, "frames": 25}
    assert component.config["diffusers"]["num_layers"] == 42 and component.config["diffusers"]["in_channels"] == 32

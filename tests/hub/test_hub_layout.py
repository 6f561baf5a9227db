"""The weights folder: where it is, its manifest, and the one-line verdict on it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from star_cli.errors import InputError, StarError
from star_cli.hub.layout import (
    FileRecord,
    check_weights_dir,
    download_command,
    read_manifest,
    record_files,
    required_files,
    resolve_weights_dir,
    star_relpath,
    variants_of,
    weights_problem,
    write_manifest,
)


def make_folder(root: Path, variant: str = "light") -> Path:
    for rel in required_files(variant):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode() * 3)
    write_manifest(root)
    return root


def test_weights_dir_prefers_the_option_then_the_environment_then_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAR_WEIGHTS_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_weights_dir(tmp_path / "cli") == tmp_path / "cli"
    assert resolve_weights_dir(None) == tmp_path / "env"
    monkeypatch.delenv("STAR_WEIGHTS_DIR")
    assert resolve_weights_dir(None) == tmp_path / "xdg" / "star" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_weights_dir(None) == tmp_path / "home" / ".cache" / "star" / "weights"


def test_manifest_records_visible_files_only(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    (root / ".downloads").mkdir()
    (root / ".downloads" / "x.incomplete").write_bytes(b"partial")
    (root / "vae" / ".tmp.partial.safetensors").write_bytes(b"temp")
    write_manifest(root)
    data = json.loads((root / "manifest.json").read_text())
    assert data["format"] == 1
    assert sorted(data["files"]) == sorted(required_files("light"))
    mtime = (root / "vae/config.json").stat().st_mtime_ns
    assert data["files"]["vae/config.json"] == {"size": 45, "sha256": hashlib.sha256(b"vae/config.json" * 3).hexdigest(), "mtime_ns": mtime}


def test_record_files_adds_entries_without_rehashing_others(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    record_files(root, {"original/x.pt": FileRecord(3, "ab" * 32)})
    manifest = read_manifest(root)
    assert manifest["original/x.pt"] == FileRecord(3, "ab" * 32)
    assert len(manifest) == len(required_files("light")) + 1


def test_complete_folder_gives_the_paths(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    paths = check_weights_dir(root, "light", verify=True)
    assert paths.star == root / "star/light_deg.safetensors"
    assert (paths.vae_dir, paths.text_encoder_dir, paths.tokenizer_dir) == (root / "vae", root / "text_encoder", root / "tokenizer")


def test_each_problem_names_the_file_and_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAR_WEIGHTS_DIR", raising=False)
    root = tmp_path / "w"
    assert weights_problem(root) == f"No STAR weights in {root}"
    make_folder(root)
    assert weights_problem(root, "heavy") == f"{root} is missing star/heavy_deg.safetensors"
    (root / "tokenizer/merges.txt").write_bytes(b"short")
    assert weights_problem(root) == f"{root / 'tokenizer/merges.txt'} is corrupt (5 bytes, the manifest says 60)"
    make_folder(root)
    vocab = root / "tokenizer/vocab.json"
    vocab.write_bytes(vocab.read_bytes().upper())
    # small files (configs, tokenizer) are hashed at every check, not trusted on their size
    assert weights_problem(root) == f"{vocab} is corrupt (its sha256 differs from manifest.json)"
    with pytest.raises(StarError, match=rf"vocab.json is corrupt .*: run `star download-weights --dir {root}` to fix it$"):
        check_weights_dir(root, "light", verify=True)
    with pytest.raises(StarError, match=rf"missing star/heavy_deg.safetensors: run `star download-weights --variant heavy --dir {root}`"):
        check_weights_dir(root, "heavy")
    (root / "manifest.json").unlink()
    assert weights_problem(root) == f"{root} has no manifest.json"


def test_unreadable_manifest_is_one_line(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(StarError, match=r"manifest.json is unreadable .*: delete it and run `star download-weights"):
        check_weights_dir(root)


def test_download_command_mentions_only_what_differs_from_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAR_WEIGHTS_DIR", str(tmp_path))
    assert download_command(tmp_path) == "star download-weights"
    assert download_command(tmp_path / "x", "all") == f"star download-weights --variant all --dir {tmp_path / 'x'}"


def test_variants() -> None:
    assert variants_of("all") == ("light", "heavy")
    assert variants_of("heavy") == ("heavy",)
    with pytest.raises(InputError):
        required_files("all")


def test_weights_parameters_counts_what_a_run_loads(tmp_path):
    from star_cli.hub.layout import weights_parameters
    from star_cli.models.loading import load_star_unet
    from star_cli.models.vae import VideoVAE
    from star_cli.testing import make_tiny_weights

    root = make_tiny_weights(tmp_path / "w")
    models = [
        load_star_unet(root / "star" / "light_deg.safetensors"),
        VideoVAE.from_dir(root / "vae").model,
    ]
    assert weights_parameters(root) == sum(p.numel() for m in models for p in m.parameters())
    assert weights_parameters(root, "heavy") is None  # not in this folder
    assert weights_parameters(root, str(tmp_path / "custom.pt")) is None


def test_a_large_file_is_rehashed_when_its_mtime_differs_from_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("star_cli.hub.layout.ALWAYS_HASHED_BYTES", 10)  # every test file counts as large
    root = make_folder(tmp_path / "w")
    unet = root / star_relpath("light")
    stat = unet.stat()
    data = bytearray(unet.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit: same size
    unet.write_bytes(bytes(data))
    assert weights_problem(root) == f"{unet} is corrupt (its sha256 differs from manifest.json)"
    os.utime(unet, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the recorded mtime again: trusted on stat alone
    assert weights_problem(root) is None


def test_a_rehashed_intact_file_has_its_mtime_recorded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "w")
    unet = root / star_relpath("light")
    os.utime(unet, ns=(0, 10**18))
    assert read_manifest(root)[star_relpath("light")].mtime_ns != 10**18
    assert weights_problem(root) is None
    assert read_manifest(root)[star_relpath("light")].mtime_ns == 10**18

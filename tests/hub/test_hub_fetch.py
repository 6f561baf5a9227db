"""`download_weights` end to end against the fake Hub, with tiny weights inference can load."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hub_release import STAR_REPO, TEXT_REPO, TINY_STAR, VAE_FALLBACK, VAE_REPO, TinyRelease, sources_text, star_path
from fakehub import COMMIT, FakeHub
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import load_file

from star_cli.errors import InputError, StarError
from star_cli.hub import check_weights_dir, download_weights, ensure_weights, offer_download
from star_cli.hub import fetch as fetch_module
from star_cli.hub.download import ATTEMPTS
from star_cli.hub.layout import read_manifest, sha256_file
from star_cli.hub.sources import Sources, parse_sources

LIGHT_KEY = f"{STAR_REPO}/{star_path('light')}"
VAE_KEY = f"{VAE_REPO}/vae/diffusion_pytorch_model.fp16.safetensors"


def output(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_full_download_converts_to_a_folder_inference_loads(
    hub: FakeHub, real_release: TinyRelease, tiny_sources: Sources, weights_dir: Path, quiet: Console
) -> None:
    from star_cli.models.loading import load_star_unet
    from star_cli.models.text import TextEncoder
    from star_cli.models.vae import VideoVAE

    real_release.publish(hub)
    root = download_weights("all", weights_dir, sources=tiny_sources, console=quiet)

    assert root == weights_dir
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "star", "text_encoder", "tokenizer", "vae"]
    manifest = read_manifest(root)
    assert len(manifest) == 10
    for rel, record in manifest.items():
        assert sha256_file(root / rel) == record.sha256 and (root / rel).stat().st_size == record.size
    for variant in ("light", "heavy"):
        paths = check_weights_dir(root, variant, verify=True)
        with safe_open(paths.star, framework="pt") as handle:
            assert json.loads(handle.metadata()["star_config"])["dim_mult"] == list(TINY_STAR["dim_mult"])
        converted = load_file(paths.star)
        source = real_release.states[variant]
        assert converted.keys() == source.keys()
        assert all(converted[k].dtype == torch.float16 and torch.equal(converted[k], source[k].half()) for k in source)
        assert load_star_unet(paths.star).config.dim == TINY_STAR["dim"]
    for src, dest in (("vae/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.safetensors"),
                      ("text_encoder/model.fp16.safetensors", "text_encoder/model.safetensors")):
        repo = VAE_REPO if src.startswith("vae/") else TEXT_REPO
        assert (root / dest).read_bytes() == real_release.files[repo, src]
    VideoVAE.from_dir(paths.vae_dir)
    assert TextEncoder.from_dirs(paths.text_encoder_dir, paths.tokenizer_dir).encode("a cat").shape[:2] == (1, 77)
    assert "ready in" in output(quiet)


def test_rerun_on_a_complete_folder_asks_nothing(hub: FakeHub, tiny_sources: Sources, complete_dir: Path, quiet: Console) -> None:
    download_weights("light", complete_dir, sources=tiny_sources, console=quiet)
    download_weights("light", complete_dir, sources=tiny_sources, console=quiet, verify=True)
    assert hub.requests == []
    assert "are complete: nothing to do" in output(quiet)
    assert "are complete and verified: nothing to do" in output(quiet)


def test_verify_refetches_only_a_corrupted_file(release_hub: FakeHub, tiny_sources: Sources, complete_dir: Path, quiet: Console) -> None:
    vae = complete_dir / "vae/diffusion_pytorch_model.safetensors"
    good = vae.read_bytes()
    vae.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    download_weights("light", complete_dir, sources=tiny_sources, console=quiet)  # sizes match: not noticed
    assert release_hub.requests == []
    with pytest.raises(StarError, match="diffusion_pytorch_model.safetensors is corrupt"):
        check_weights_dir(complete_dir, verify=True)
    download_weights("light", complete_dir, sources=tiny_sources, console=quiet, verify=True)
    assert vae.read_bytes() == good
    assert dict(release_hub.served) == {VAE_KEY: len(good)}


def test_lost_manifest_reuses_correct_local_files(release_hub: FakeHub, tiny_sources: Sources, complete_dir: Path, quiet: Console) -> None:
    before = read_manifest(complete_dir)
    (complete_dir / "manifest.json").unlink()
    download_weights("light", complete_dir, sources=tiny_sources, console=quiet)
    assert release_hub.seen("GET") == []  # HEADs only: every local file was checked by hash and kept
    assert read_manifest(complete_dir) == before


def test_heavy_after_light_fetches_only_the_heavy_checkpoint(release_hub: FakeHub, tiny_release: TinyRelease, tiny_sources: Sources, complete_dir: Path, quiet: Console) -> None:
    download_weights("heavy", complete_dir, sources=tiny_sources, console=quiet)
    assert dict(release_hub.served) == {f"{STAR_REPO}/{star_path('heavy')}": len(tiny_release.files[STAR_REPO, star_path("heavy")])}
    check_weights_dir(complete_dir, "heavy")
    check_weights_dir(complete_dir, "light")


def test_pickle_download_resumes_across_runs(release_hub: FakeHub, tiny_release: TinyRelease, tiny_sources: Sources, weights_dir: Path, quiet: Console) -> None:
    size = len(tiny_release.files[STAR_REPO, star_path("light")])
    release_hub.cut(LIGHT_KEY, size // 3, *[0] * (ATTEMPTS - 1))
    with pytest.raises(StarError, match="run the same command again to resume"):
        download_weights("light", weights_dir, sources=tiny_sources, console=quiet)
    assert (weights_dir / ".downloads/original/light_deg.pt.incomplete").stat().st_size == size // 3
    download_weights("light", weights_dir, sources=tiny_sources, console=quiet, keep_original=True)
    assert release_hub.served[LIGHT_KEY] == size
    check_weights_dir(weights_dir, "light", verify=True)
    assert not (weights_dir / ".downloads").exists()
    assert read_manifest(weights_dir)["original/light_deg.pt"].sha256 == tiny_release.star_sha256()["light"]
    assert (weights_dir / "original/light_deg.pt").read_bytes() == tiny_release.files[STAR_REPO, star_path("light")]


def test_original_is_deleted_after_conversion_by_default(release_hub: FakeHub, tiny_sources: Sources, complete_dir: Path, quiet: Console) -> None:
    shutil.rmtree(complete_dir / "star")
    download_weights("light", complete_dir, sources=tiny_sources, console=quiet)
    assert not (complete_dir / "original").exists()
    check_weights_dir(complete_dir, "light", verify=True)


class _Payload:
    """Unpickling this would run a shell command; weights_only loading must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_not_run(hub: FakeHub, tiny_release: TinyRelease, tmp_path: Path, complete_dir: Path, quiet: Console) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Payload(str(marker))}, evil)
    tiny_release.publish(hub)
    hub.add(STAR_REPO, star_path("light"), evil.read_bytes())
    sources = parse_sources(sources_text(TINY_STAR, {**tiny_release.star_sha256(), "light": sha256_file(evil)}))
    with pytest.raises(StarError, match="refused"):
        download_weights("light", complete_dir, sources=sources, console=quiet)
    assert not marker.exists()


def test_gated_primary_falls_back_to_the_next_repo(release_hub: FakeHub, tiny_sources: Sources, complete_dir: Path, quiet: Console) -> None:
    shutil.rmtree(complete_dir / "vae")
    release_hub.gate(VAE_REPO)
    download_weights("light", complete_dir, sources=tiny_sources, console=quiet)
    assert f"using {VAE_FALLBACK} instead of {VAE_REPO} (Access to {VAE_REPO} is gated" in output(quiet)
    assert {s.path.split("/resolve/")[0] for s in release_hub.seen("HEAD")} == {f"/{VAE_REPO}", f"/{VAE_FALLBACK}"}
    check_weights_dir(complete_dir, "light", verify=True)


def test_all_repos_gated_names_the_page_and_login_before_any_download(release_hub: FakeHub, tiny_sources: Sources, weights_dir: Path, quiet: Console) -> None:
    release_hub.gate(VAE_REPO)
    release_hub.gate(VAE_FALLBACK)
    with pytest.raises(StarError) as caught:
        download_weights("light", weights_dir, sources=tiny_sources, console=quiet)
    message = str(caught.value)
    assert message == (
        f"Access to {VAE_REPO} is gated or needs a login: accept its terms at {release_hub.endpoint}/{VAE_REPO} "
        f"and run `hf auth login` (or set HF_TOKEN) (fallbacks tried: {VAE_FALLBACK} is gated or needs a login)"
    )
    assert release_hub.seen("GET") == []


def test_missing_file_names_repo_and_file(hub: FakeHub, tiny_release: TinyRelease, tiny_sources: Sources, weights_dir: Path, quiet: Console) -> None:
    tiny_release.publish(hub)
    del hub.files[TEXT_REPO, "text_encoder/config.json"]
    with pytest.raises(StarError, match=f"^{TEXT_REPO} has no file text_encoder/config.json at revision main$"):
        download_weights("light", weights_dir, sources=tiny_sources, console=quiet)


def test_file_missing_everywhere_lists_the_fallbacks_tried(hub: FakeHub, tiny_release: TinyRelease, tiny_sources: Sources, weights_dir: Path, quiet: Console) -> None:
    tiny_release.publish(hub)
    del hub.files[VAE_REPO, "vae/config.json"], hub.files[VAE_FALLBACK, "vae/config.json"]
    with pytest.raises(StarError, match=rf"^{VAE_REPO} has no file vae/config.json at revision main \(fallbacks tried: {VAE_FALLBACK} has no file vae/config.json at revision main\)$"):
        download_weights("light", weights_dir, sources=tiny_sources, console=quiet)


def test_offline_with_nothing_local_is_one_line(release_hub: FakeHub, tiny_sources: Sources, weights_dir: Path, quiet: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StarError, match="lacks star/light_deg.safetensors and 8 more file.*HF_HUB_OFFLINE is set") as caught:
        download_weights("light", weights_dir, sources=tiny_sources, console=quiet)
    assert "\n" not in str(caught.value)
    assert release_hub.requests == []


def test_offline_with_a_complete_folder_is_fine(hub: FakeHub, tiny_sources: Sources, complete_dir: Path, quiet: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download_weights("light", complete_dir, sources=tiny_sources, console=quiet) == complete_dir


class _Usage:
    def __init__(self, free: int) -> None:
        self.free = free


def test_too_little_disk_space_stops_before_downloading(release_hub: FakeHub, tiny_sources: Sources, weights_dir: Path, quiet: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module.shutil, "disk_usage", lambda path: _Usage(free=1_000_000))
    with pytest.raises(InputError, match=rf"not enough free disk space in {weights_dir}: the weights need about 0\.1 GB, 0\.0 GB are free"):
        download_weights("light", weights_dir, sources=tiny_sources, console=quiet)
    assert release_hub.seen("GET") == []


def test_disk_peak_counts_conversions_and_deletions() -> None:
    # two 8-unit pickles, each converted to 4 units and then deleted, then a 1-unit file
    assert fetch_module.disk_peak([(8, 4, 8), (8, 4, 8), (1, 0, 0)]) == 16
    # kept originals accumulate
    assert fetch_module.disk_peak([(8, 4, 0), (8, 4, 0)]) == 24


def test_unknown_variant_is_bad_input(quiet: Console, weights_dir: Path) -> None:
    with pytest.raises(InputError, match="--variant must be light, heavy, all or cogvideox, not 'medium'"):
        download_weights("medium", weights_dir, console=quiet)


def test_offer_download_without_a_terminal_names_the_command(weights_dir: Path, quiet: Console) -> None:
    with pytest.raises(StarError, match=rf"^No STAR weights in {weights_dir}: run `star download-weights --dir {weights_dir}`$"):
        offer_download(weights_dir, "light", console=quiet, interactive=False)


def test_ensure_weights_on_a_terminal_asks_once_then_downloads(
    release_hub: FakeHub, tiny_sources: Sources, light_folder: Path, weights_dir: Path, quiet: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = []
    monkeypatch.setattr(fetch_module.Confirm, "ask", lambda prompt, **kw: questions.append(str(prompt)) or True)
    monkeypatch.setattr(fetch_module, "load_sources", lambda: tiny_sources)
    shutil.copytree(light_folder, weights_dir)
    shutil.rmtree(weights_dir / "tokenizer")
    paths = ensure_weights(weights_dir, "light", console=quiet, interactive=True)
    assert questions == [f"{weights_dir} is missing tokenizer/vocab.json. Download them now?"]
    assert paths.tokenizer_dir == weights_dir / "tokenizer"
    assert {s.path.rsplit("/", 1)[-1] for s in release_hub.seen("GET")} == {
        "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"
    }


def test_declined_offer_names_the_corrupt_file(complete_dir: Path, quiet: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    (complete_dir / "tokenizer/merges.txt").write_text("truncated")
    monkeypatch.setattr(fetch_module.Confirm, "ask", lambda prompt, **kw: False)
    with pytest.raises(StarError, match=r"tokenizer/merges.txt is corrupt \(9 bytes, the manifest says \d+\): run `star download-weights --dir"):
        ensure_weights(complete_dir, "light", console=quiet, interactive=True)


def test_revision_applies_to_the_star_repo_only(release_hub: FakeHub, tiny_sources: Sources, weights_dir: Path, quiet: Console) -> None:
    with pytest.raises(StarError, match=f"^{STAR_REPO} has no revision 'v9'$"):
        download_weights("light", weights_dir, sources=tiny_sources, console=quiet, revision="v9")
    release_hub.requests.clear()
    download_weights("light", weights_dir, sources=tiny_sources, console=quiet, revision=COMMIT)
    asked: dict[str, str] = {}  # the revision each repo was first asked for (later HEADs use the commit it resolved to)
    for seen in release_hub.seen("HEAD"):
        repo, rest = seen.path.split("/resolve/")
        asked.setdefault(repo, rest.split("/")[0])
    assert asked == {f"/{STAR_REPO}": COMMIT, f"/{VAE_REPO}": "main", f"/{TEXT_REPO}": "main"}


MIRROR = "test/star-mirror"


def mirrored_sources(tiny_release: TinyRelease, sha256: dict[str, str] | None = None) -> Sources:
    """The tiny sources plus a mirror that keeps the checkpoints at its root."""
    text = sources_text(TINY_STAR, sha256 or tiny_release.star_sha256())
    text = text.replace(f'repos = ["{STAR_REPO}"]', f'repos = ["{STAR_REPO}"]\nmirrors = ["{MIRROR}"]')
    for variant in ("light", "heavy"):
        text = text.replace(f'path = "{star_path(variant)}"', f'path = "{star_path(variant)}"\nmirror_path = "{variant}_deg.pt"')
    return parse_sources(text, "mirrored")


def test_sha_verified_mirror_is_the_last_fallback(hub: FakeHub, tiny_release: TinyRelease, complete_dir: Path, quiet: Console) -> None:
    light = tiny_release.files[STAR_REPO, star_path("light")]
    for (repo, path), data in tiny_release.files.items():
        if repo != STAR_REPO:
            hub.add(repo, path, data)
    hub.add(MIRROR, "light_deg.pt", light)  # the official repo is gone, the mirror holds the same bytes
    (complete_dir / "star" / "light_deg.safetensors").unlink()
    download_weights("light", complete_dir, sources=mirrored_sources(tiny_release), console=quiet)
    assert f"using the sha256-verified mirror {MIRROR} instead of {STAR_REPO}" in output(quiet)
    check_weights_dir(complete_dir, "light", verify=True)


def test_mirror_is_never_used_for_a_file_without_a_pinned_sha256(hub: FakeHub, tiny_release: TinyRelease, quiet: Console) -> None:
    hub.add(MIRROR, "light_deg.pt", tiny_release.files[STAR_REPO, star_path("light")])
    component = next(c for c in mirrored_sources(tiny_release).components if c.name == "star")
    files = [replace(f, sha256=None) for f in component.files]
    with pytest.raises(StarError, match=f"repository {STAR_REPO} was not found"):
        fetch_module._resolve_component(component, files, "main", hub.endpoint, quiet)
    assert not any(s.path.startswith(f"/{MIRROR}") for s in hub.seen("HEAD"))

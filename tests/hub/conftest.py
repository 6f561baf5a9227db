"""Fixtures of the hub tests: a fake Hub on 127.0.0.1 that the real huggingface_hub client talks to,
and tiny STAR weights published on it the way the real ones are (fp32 pickles, fp16 VAE/text files)."""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from fakehub import FakeHub
from hub_release import PLAIN_FILES, STAR_REPO, TEXT_REPO, TINY_STAR, VAE_FALLBACK, VAE_REPO, TinyRelease, sources_text, star_path
from huggingface_hub import constants
from rich.console import Console

from star_cli.hub import download
from star_cli.hub.sources import Sources, parse_sources


@contextmanager
def running_hub(mp: pytest.MonkeyPatch, home: Path) -> Iterator[FakeHub]:
    """A fake Hub; HF_ENDPOINT points at it, nothing beyond 127.0.0.1 is reachable, and no real
    token, cache, telemetry or offline flag leaks in."""
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in ("127.0.0.1", b"127.0.0.1"):
            raise socket.gaierror(f"tests/hub: no network beyond 127.0.0.1 (asked for {host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    mp.setattr(socket, "getaddrinfo", loopback_only)
    fake = FakeHub().start()
    mp.setenv("HF_ENDPOINT", fake.endpoint)
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "STAR_WEIGHTS_DIR", "STAR_WEIGHTS_SOURCES"):
        mp.delenv(name, raising=False)
    mp.setenv("XDG_CACHE_HOME", str(home / "cache"))
    # huggingface_hub read these at import: no stored token, no telemetry look-up of its own
    mp.setattr(constants, "HF_TOKEN_PATH", str(home / "hf_token"))
    mp.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    mp.setattr(constants, "HF_HUB_OFFLINE", False)
    mp.setattr(download, "RETRY_WAIT_S", 0.0)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    with running_hub(monkeypatch, tmp_path_factory.mktemp("home")) as fake:
        yield fake


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory: pytest.TempPathFactory) -> TinyRelease:
    """Tiny STAR pickles (light wrapped in {'state_dict': ...} as official files may be, heavy bare)
    and stand-in bytes for the VAE and text files (tests that load them use `real_release`)."""
    import torch

    from star_cli.models import STARUNet

    folder = tmp_path_factory.mktemp("release")
    files: dict[tuple[str, str], bytes] = {}
    states = {}
    for seed, variant in enumerate(("light", "heavy")):
        torch.manual_seed(seed)
        states[variant] = STARUNet(**TINY_STAR).state_dict()
        pickle = folder / f"{variant}.pt"
        torch.save({"state_dict": states[variant], "step": 1} if variant == "light" else states[variant], pickle)
        files[STAR_REPO, star_path(variant)] = pickle.read_bytes()
    for index, src in enumerate(PLAIN_FILES):
        data = hashlib.sha256(src.encode()).digest() * (100 + index)
        for repo in (VAE_REPO, VAE_FALLBACK) if src.startswith("vae/") else (TEXT_REPO,):
            files[repo, src] = data
    return TinyRelease(files, states)


@pytest.fixture(scope="session")
def real_release(tiny_release: TinyRelease, tmp_path_factory: pytest.TempPathFactory) -> TinyRelease:
    """`tiny_release` with loadable VAE, text tower and tokenizer files (star_cli.testing's tiny ones)."""
    from star_cli.testing import make_tiny_weights

    made = make_tiny_weights(tmp_path_factory.mktemp("made"), variants=("light",))
    files = dict(tiny_release.files)
    for src, dest in PLAIN_FILES.items():
        for repo in (VAE_REPO, VAE_FALLBACK) if src.startswith("vae/") else (TEXT_REPO,):
            files[repo, src] = (made / dest).read_bytes()
    return replace(tiny_release, files=files)


@pytest.fixture(scope="session")
def tiny_sources(tiny_release: TinyRelease) -> Sources:
    return parse_sources(sources_text(TINY_STAR, tiny_release.star_sha256()), "tests/hub tiny sources")


@pytest.fixture
def release_hub(hub: FakeHub, tiny_release: TinyRelease) -> FakeHub:
    return tiny_release.publish(hub)


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=300)


@pytest.fixture
def quiet() -> Console:
    return quiet_console()


@pytest.fixture(scope="session")
def light_folder(tiny_release: TinyRelease, tiny_sources: Sources, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A light weights folder as `download_weights` leaves it (made once; tests get copies)."""
    from star_cli.hub import download_weights

    root = tmp_path_factory.mktemp("light") / "weights"
    with pytest.MonkeyPatch.context() as mp, running_hub(mp, tmp_path_factory.mktemp("home")) as fake:
        tiny_release.publish(fake)
        download_weights("light", root, sources=tiny_sources, console=quiet_console())
        assert fake.seen("GET")
    return root


@pytest.fixture
def weights_dir(tmp_path: Path) -> Path:
    return tmp_path / "weights"


@pytest.fixture
def complete_dir(light_folder: Path, weights_dir: Path) -> Path:
    return Path(shutil.copytree(light_folder, weights_dir))

"""One file through the real huggingface_hub client and a fake Hub: resolve, resume, verify, errors."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
from fakehub import COMMIT, FakeHub

from star_cli.errors import StarError
from star_cli.hub.download import (
    ATTEMPTS,
    HubAccessError,
    download_file,
    expected_of,
    gated_message,
    hub_endpoint,
    resolve,
)

DATA = os.urandom(300_000)
REPO = "org/model"
PATH = "weights/big.safetensors"


def fetch(hub: FakeHub, tmp_path: Path, repo: str = REPO, path: str = PATH, pinned: str | None = None) -> tuple[Path, str]:
    remote = resolve(repo, path, "main", hub_endpoint())
    final = tmp_path / "out" / Path(path).name
    partial = tmp_path / ".downloads" / (Path(path).name + ".incomplete")
    sha = download_file(remote, expected_of(remote, pinned), final, partial, endpoint=hub_endpoint(), on_progress=lambda n: None)
    return final, sha


def test_resolve_reads_lfs_metadata_through_the_hub_client(hub: FakeHub) -> None:
    hub.add(REPO, PATH, DATA)
    remote = resolve(REPO, PATH, "main", hub_endpoint())
    assert remote.size == len(DATA)
    assert remote.sha256 == hashlib.sha256(DATA).hexdigest()
    assert remote.revision == COMMIT
    assert remote.url.startswith(hub.cdn + "/blobs/")
    assert [s.method for s in hub.requests] == ["HEAD"]


def test_download_verifies_and_moves_into_place(hub: FakeHub, tmp_path: Path) -> None:
    key = hub.add(REPO, PATH, DATA)
    final, sha = fetch(hub, tmp_path)
    assert final.read_bytes() == DATA
    assert sha == hashlib.sha256(DATA).hexdigest()
    assert not list((tmp_path / ".downloads").iterdir())
    assert hub.served[key] == len(DATA)


def test_small_file_is_checked_by_its_git_blob_hash(hub: FakeHub, tmp_path: Path) -> None:
    key = hub.add(REPO, "config.json", b'{"a": 1}\n')
    final, _ = fetch(hub, tmp_path, path="config.json")
    assert final.read_bytes() == b'{"a": 1}\n'
    hub.corrupt(key, 3)
    final.unlink()
    with pytest.raises(StarError, match="config.json arrived corrupted"):
        fetch(hub, tmp_path, path="config.json")


def test_cut_transfer_resumes_in_the_same_run_fetching_only_missing_bytes(hub: FakeHub, tmp_path: Path) -> None:
    key = hub.add(REPO, PATH, DATA)
    hub.cut(key, 100_000)
    final, _ = fetch(hub, tmp_path)
    assert final.read_bytes() == DATA
    assert hub.served[key] == len(DATA)
    ranges = [s.headers.get("range") for s in hub.seen("GET", "cdn")]
    assert ranges == [None, "bytes=100000-"]


def test_interrupted_run_leaves_partial_bytes_that_the_next_run_resumes(hub: FakeHub, tmp_path: Path) -> None:
    key = hub.add(REPO, PATH, DATA)
    hub.cut(key, 120_000, *[0] * (ATTEMPTS - 1))
    with pytest.raises(StarError, match=r"broke off at 120000 of 300000 bytes.*run the same command again to resume"):
        fetch(hub, tmp_path)
    partial = tmp_path / ".downloads" / "big.safetensors.incomplete"
    assert partial.stat().st_size == 120_000
    hub.served.clear()
    final, _ = fetch(hub, tmp_path)
    assert final.read_bytes() == DATA
    assert hub.served[key] == len(DATA) - 120_000
    assert hub.seen("GET", "cdn")[-1].headers["range"] == "bytes=120000-"


def test_expired_cdn_link_is_resolved_again(hub: FakeHub, tmp_path: Path) -> None:
    key = hub.add(REPO, PATH, DATA)
    hub.expire(key)
    final, _ = fetch(hub, tmp_path)
    assert final.read_bytes() == DATA
    assert [(s.method, s.role) for s in hub.requests] == [("HEAD", "hub"), ("HEAD", "hub"), ("GET", "cdn"), ("HEAD", "hub"), ("GET", "cdn")]
    assert 403 in hub.statuses


def test_server_ignoring_the_range_restarts_cleanly(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(REPO, PATH, DATA)
    partial = tmp_path / ".downloads" / "big.safetensors.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 5000)  # wrong bytes: only a full restart can fix them
    hub.ignore_range = True
    final, _ = fetch(hub, tmp_path)
    assert final.read_bytes() == DATA


def test_corrupted_byte_is_caught_by_sha256_and_the_copy_dropped(hub: FakeHub, tmp_path: Path) -> None:
    key = hub.add(REPO, PATH, DATA)
    hub.corrupt(key, 123_456)
    with pytest.raises(StarError, match=f"{REPO}/{PATH} arrived corrupted"):
        fetch(hub, tmp_path)
    assert not (tmp_path / "out" / "big.safetensors").exists()
    assert not (tmp_path / ".downloads" / "big.safetensors.incomplete").exists()


def test_pinned_sha256_that_the_hub_contradicts_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(REPO, PATH, DATA)
    with pytest.raises(StarError, match="changed upstream"):
        fetch(hub, tmp_path, pinned="0" * 64)


@pytest.mark.parametrize("token, status", [(None, 401), ("hf_wrong", 403)])
def test_gated_repo_names_the_page_and_the_login(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, token: str | None, status: int) -> None:
    hub.add(REPO, PATH, DATA)
    hub.gate(REPO, {"hf_good"})
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(HubAccessError) as caught:
        resolve(REPO, PATH, "main", hub_endpoint())
    assert caught.value.gated
    assert str(caught.value) == gated_message(REPO, hub.endpoint)
    assert f"{hub.endpoint}/{REPO}" in str(caught.value) and "hf auth login" in str(caught.value)
    assert hub.requests[-1].headers.get("authorization") == (f"Bearer {token}" if token else None)
    assert hub.statuses[-1] == status


def test_hf_token_opens_a_gated_repo_and_stays_off_the_cdn(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(REPO, PATH, DATA)
    hub.gate(REPO, {"hf_good"})
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    final, _ = fetch(hub, tmp_path)
    assert final.read_bytes() == DATA
    assert hub.seen("HEAD", "hub")[0].headers["authorization"] == "Bearer hf_good"
    assert "authorization" not in hub.seen("GET", "cdn")[0].headers


@pytest.mark.parametrize(
    "repo, path, revision, message",
    [
        ("org/none", PATH, "main", "repository org/none was not found"),
        (REPO, "nope.bin", "main", f"{REPO} has no file nope.bin at revision main"),
        (REPO, PATH, "v9", f"{REPO} has no revision 'v9'"),
    ],
)
def test_missing_repo_file_or_revision(hub: FakeHub, repo: str, path: str, revision: str, message: str) -> None:
    hub.add(REPO, PATH, DATA)
    with pytest.raises(HubAccessError, match=message) as caught:
        resolve(repo, path, revision, hub_endpoint())
    assert not caught.value.gated


def test_unreachable_endpoint_is_one_line(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(StarError, match=rf"cannot reach http://127.0.0.1:{port} \(ConnectError") as caught:
        resolve(REPO, PATH, "main", hub_endpoint())
    assert "\n" not in str(caught.value)

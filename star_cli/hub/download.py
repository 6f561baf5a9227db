"""One file from the Hub: resolve it, fetch it resumably, check its hash, move it into place.

huggingface_hub resolves the file (URL, size, commit, the LFS sha256 in the ETag), builds
the auth headers and owns the HTTP client; the ranged GET is done here because the
library's own downloads restart from zero when a run is interrupted. Bytes go to a
`.incomplete` file that the next attempt (or the next run) continues with
`Range: bytes=N-`, and only a file whose hash matches is renamed onto its final path.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx2
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from star_cli import __version__
from star_cli.errors import StarError
from star_cli.hub.layout import HASH_CHUNK

ATTEMPTS = 3
RETRY_WAIT_S = 2.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


def hub_endpoint() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub reads it once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """HF_HUB_OFFLINE as it is now, or as huggingface_hub read it at import."""
    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class RemoteFile:
    """A file as the Hub describes it; `revision` is the commit it resolved to."""

    repo: str
    path: str
    revision: str
    url: str
    size: int
    etag: str | None

    @property
    def name(self) -> str:
        return f"{self.repo}/{self.path}"

    @property
    def sha256(self) -> str | None:
        """LFS files carry their sha256 as ETag."""
        return self.etag if self.etag and _SHA256.fullmatch(self.etag) else None

    @property
    def git_sha1(self) -> str | None:
        """Small (non-LFS) files carry their git blob hash as ETag."""
        return self.etag if self.etag and _GIT_SHA1.fullmatch(self.etag) else None


@dataclass(frozen=True)
class Expected:
    """What a correct copy of a file must be."""

    size: int
    sha256: str | None
    git_sha1: str | None


class HubAccessError(StarError):
    """This repo cannot give us the file (gated, missing): another repo of the component may."""

    def __init__(self, message: str, *, gated: bool, brief: str | None = None):
        super().__init__(message)
        self.gated = gated
        self.brief = brief or message  # for lists of fallbacks tried


def gated_message(repo: str, endpoint: str) -> str:
    return (
        f"Access to {repo} is gated or needs a login: accept its terms at {endpoint}/{repo} "
        "and run `hf auth login` (or set HF_TOKEN)."
    )


def _hub_error(error: HfHubHTTPError | httpx2.TransportError | OfflineModeIsEnabled, repo: str, path: str, revision: str, endpoint: str) -> StarError:
    """One line for a failed Hub request; HubAccessError when another repo could still serve."""
    if isinstance(error, OfflineModeIsEnabled):
        return StarError(f"cannot fetch {repo}/{path}: HF_HUB_OFFLINE is set")
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code
        if isinstance(error, GatedRepoError) or status in (401, 403):
            return HubAccessError(gated_message(repo, endpoint), gated=True, brief=f"{repo} is gated or needs a login")
        if isinstance(error, RevisionNotFoundError):
            return HubAccessError(f"{repo} has no revision {revision!r}", gated=False)
        if isinstance(error, RepositoryNotFoundError):
            return HubAccessError(f"repository {repo} was not found at {endpoint}", gated=False)
        if isinstance(error, EntryNotFoundError) or status == 404:
            return HubAccessError(f"{repo} has no file {path} at revision {revision}", gated=False)
        return StarError(f"{endpoint} answered HTTP {status} for {repo}/{path}: try again later")
    return StarError(f"cannot reach {endpoint} ({type(error).__name__}: {error}): check the network or HF_ENDPOINT")


def resolve(repo: str, path: str, revision: str, endpoint: str) -> RemoteFile:
    """Ask the Hub (one HEAD) where `path` is, how big it is and what it hashes to."""
    url = hf_hub_url(repo, path, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint, library_name="star-vsr", library_version=__version__)
    except (HfHubHTTPError, httpx2.TransportError, OfflineModeIsEnabled) as error:
        raise _hub_error(error, repo, path, revision, endpoint) from None
    if meta.size is None:
        raise StarError(f"{endpoint} did not say how big {repo}/{path} is: try again later")
    return RemoteFile(repo, path, meta.commit_hash or revision, meta.location, meta.size, meta.etag)


def expected_of(remote: RemoteFile, pinned_sha256: str | None) -> Expected:
    """Our pinned sha256 wins; the Hub's hash is the check when we pin nothing."""
    if pinned_sha256 and remote.sha256 and pinned_sha256 != remote.sha256:
        raise StarError(
            f"{remote.name} at {remote.revision} has sha256 {remote.sha256}, not the expected {pinned_sha256}: "
            "the file changed upstream (pass --revision with a matching commit, or update the weights sources)"
        )
    sha256 = pinned_sha256 or remote.sha256
    return Expected(remote.size, sha256, None if sha256 else remote.git_sha1)


def matching_sha256(path: Path, expected: Expected) -> str | None:
    """The file's sha256 when it is a correct copy, else None (one pass over the file)."""
    if not path.is_file() or path.stat().st_size != expected.size:
        return None
    sha256 = hashlib.sha256()
    git = hashlib.sha1(f"blob {expected.size}\0".encode()) if expected.git_sha1 else None
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            sha256.update(chunk)
            if git is not None:
                git.update(chunk)
    if expected.sha256 and sha256.hexdigest() != expected.sha256:
        return None
    if git is not None and git.hexdigest() != expected.git_sha1:
        return None
    return sha256.hexdigest()


def _headers_for(url: str, endpoint: str) -> dict[str, str]:
    """Auth only for the Hub itself: signed CDN URLs must not receive the token."""
    same_origin = urlparse(url)[:2] == urlparse(endpoint)[:2]
    headers = build_hf_headers(token=None if same_origin else False, library_name="star-vsr", library_version=__version__)
    headers["Accept-Encoding"] = "identity"  # byte ranges must address the stored bytes
    return headers


def _continue_download(url: str, partial: Path, size: int, headers: dict[str, str], on_progress: Callable[[int], None]) -> None:
    """Append the missing bytes of `partial` from `url`; restart if the server ignores the range."""
    have = partial.stat().st_size if partial.exists() else 0
    if have > size:
        partial.unlink()
        have = 0
    on_progress(have)
    if have == size:
        return
    request_headers = {**headers, "Range": f"bytes={have}-"} if have else headers
    timeout = httpx2.Timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    with get_session().stream("GET", url, headers=request_headers, timeout=timeout) as response:
        hf_raise_for_status(response)
        if response.status_code != 206:
            have = 0
        with open(partial, "ab" if have else "wb") as out:
            for chunk in response.iter_raw():
                out.write(chunk)
                have += len(chunk)
                on_progress(have)
    if have < size:
        raise httpx2.RemoteProtocolError(f"the server sent {have} of {size} bytes")


def _reason(error: httpx2.TransportError | HfHubHTTPError) -> str:
    if isinstance(error, HfHubHTTPError):
        return f"HTTP {error.response.status_code}"
    return type(error).__name__


def download_file(
    remote: RemoteFile,
    expected: Expected,
    final: Path,
    partial: Path,
    *,
    endpoint: str,
    on_progress: Callable[[int], None],
) -> str:
    """Fetch `remote` to `final` through `partial`, resuming what is there; returns the sha256.

    Each attempt resolves the file again: CDN links are signed and expire, and the plan
    may have been made an 8 GB download ago. A broken transfer is resumed up to ATTEMPTS
    times in this run; after that the partial file stays for the next run. A hash
    mismatch deletes the partial file: its bytes cannot be trusted to resume from.
    """
    partial.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, ATTEMPTS + 1):
        remote = resolve(remote.repo, remote.path, remote.revision, endpoint)
        try:
            _continue_download(remote.url, partial, expected.size, _headers_for(remote.url, endpoint), on_progress)
            break
        except (httpx2.TransportError, HfHubHTTPError) as error:
            if attempt == ATTEMPTS:
                have = partial.stat().st_size if partial.exists() else 0
                raise StarError(
                    f"download of {remote.name} broke off at {have} of {expected.size} bytes "
                    f"({_reason(error)}): run the same command again to resume"
                ) from None
            time.sleep(RETRY_WAIT_S * attempt)
    sha256 = matching_sha256(partial, expected)
    if sha256 is None:
        partial.unlink()
        raise StarError(
            f"{remote.name} arrived corrupted (not the expected size and hash); "
            "the bad copy was deleted: run the same command again"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)
    return sha256

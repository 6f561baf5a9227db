"""A stand-in for the Hugging Face Hub on 127.0.0.1: real HTTP for the real huggingface_hub client.

It answers what `get_hf_file_metadata` (HEAD) and our ranged GET ask, with the headers
the client reads:
- `/{org}/{name}/resolve/{revision}/{path}` on the hub port
  - small files: 200 with `ETag: "<git blob sha1>"`, `X-Repo-Commit`, `Content-Length`;
  - LFS files: 302 to the CDN port (another origin, like the real CDN, so the client stops
    at the redirect and the token is not sent on) with `X-Linked-Etag: "<sha256>"`,
    `X-Linked-Size`, `X-Repo-Commit`;
  - errors like the Hub's: 401 (no token) / 403 (wrong token) `X-Error-Code: GatedRepo`,
    404 `RepoNotFound` / `RevisionNotFound` / `EntryNotFound`.
- `/blobs/{sha256}` on the CDN port: 200, or 206 with `Content-Range` for `Range: bytes=N-`.

Knobs: `gate(repo, tokens)`, `cut(key, after_bytes, ...)` closes the connection mid-body,
`expire(key, times)` answers the next CDN GETs with 403 (a signed link that expired),
`corrupt(key, offset)` flips a served byte, `ignore_range`. Records: `requests`
(method, role, path, lower-cased headers), `statuses` answered, and `served[key]`, the
body bytes sent per file.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "c0ffee0123456789abcdef0123456789abcdef01"
_RANGE = re.compile(r"bytes=(\d+)-")


@dataclass(frozen=True)
class Seen:
    method: str
    role: str
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class _File:
    key: str
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], _File] = {}
        self.gated: dict[str, set[str]] = {}
        self.cuts: dict[str, list[int]] = {}
        self.corrupted: dict[str, int] = {}
        self.expired: Counter[str] = Counter()
        self.ignore_range = False
        self.requests: list[Seen] = []
        self.statuses: list[int] = []
        self.served: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []

    # set-up --------------------------------------------------------------
    def add(self, repo: str, path: str, data: bytes, *, lfs: bool | None = None) -> str:
        """Serve `data` as `repo`/`path`; LFS by default for weight files. Returns the file's key."""
        key = f"{repo}/{path}"
        is_lfs = path.endswith((".pt", ".safetensors")) if lfs is None else lfs
        self.files[repo, path] = _File(key, data, is_lfs)
        return key

    def gate(self, repo: str, tokens: set[str] = frozenset()) -> None:
        """Make `repo` answer like a gated repo to everyone but the holders of `tokens`."""
        self.gated[repo] = set(tokens)

    def cut(self, key: str, *after_bytes: int) -> None:
        """Close the connection after this many body bytes on the next GETs of `key`, one count per GET."""
        self.cuts[key] = list(after_bytes)

    def expire(self, key: str, times: int = 1) -> None:
        self.expired[key] = times

    def corrupt(self, key: str, offset: int) -> None:
        self.corrupted[key] = offset

    def sha256(self, repo: str, path: str) -> str:
        return self.files[repo, path].sha256

    # life ----------------------------------------------------------------
    def start(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.hub, server.role = self, role  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def seen(self, method: str | None = None, role: str | None = None) -> list[Seen]:
        return [s for s in self.requests if (method is None or s.method == method) and (role is None or s.role == role)]

    def _by_sha(self, sha256: str) -> _File | None:
        return next((f for f in self.files.values() if f.lfs and f.sha256 == sha256), None)

    def _next_cut(self, key: str) -> int | None:
        with self._lock:
            pending = self.cuts.get(key)
            return pending.pop(0) if pending else None


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/1"

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        with self.hub._lock:
            self.hub.statuses.append(code)
        super().send_response(code, message)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def _answer(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        role = self.server.role  # type: ignore[attr-defined]
        with self.hub._lock:
            self.hub.requests.append(Seen(self.command, role, path, {k.lower(): v for k, v in self.headers.items()}))
        if role == "cdn":
            match = re.fullmatch(r"/blobs/([0-9a-f]{64})", path)
            file = self.hub._by_sha(match[1]) if match else None
            if file is None:
                return self._error(404, "EntryNotFound")
            with self.hub._lock:
                expired = not head and self.hub.expired[file.key] > 0
                self.hub.expired[file.key] -= expired
            if expired:
                return self._error(403, "SignatureExpired")
            return self._body(file, file.sha256, head)
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match is None:
            return self._error(404, "RepoNotFound")
        repo, revision, filename = match.groups()
        if repo in self.hub.gated:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if token not in self.hub.gated[repo]:
                return self._error(403 if token else 401, "GatedRepo")
        if not any(r == repo for r, _ in self.hub.files):
            return self._error(404, "RepoNotFound")
        if revision not in ("main", COMMIT):
            return self._error(404, "RevisionNotFound")
        file = self.hub.files.get((repo, filename))
        if file is None:
            return self._error(404, "EntryNotFound")
        if file.lfs:
            self.send_response(302)
            self.send_header("Location", f"{self.hub.cdn}/blobs/{file.sha256}?X-Amz-Signature=fake")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Linked-Etag", f'"{file.sha256}"')
            self.send_header("X-Linked-Size", str(len(file.data)))
            self.send_header("ETag", f'"{file.git_sha1}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._body(file, file.git_sha1, head, commit=COMMIT)

    def _error(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", f"{code} (fake hub)")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self, file: _File, etag: str, head: bool, commit: str | None = None) -> None:
        start = 0
        wanted = _RANGE.fullmatch(self.headers.get("Range", ""))
        if wanted and not self.hub.ignore_range:
            start = int(wanted[1])
            if start >= len(file.data):
                return self._error(416, "RangeNotSatisfiable")
        body = bytearray(file.data[start:])
        offset = self.hub.corrupted.get(file.key)
        if offset is not None and start <= offset < len(file.data):
            body[offset - start] ^= 0xFF
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(file.data) - 1}/{len(file.data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{etag}"')
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        cut = self.hub._next_cut(file.key)
        sent = body if cut is None else body[:cut]
        with self.hub._lock:  # counted before sending: the client may be done before this thread resumes
            self.hub.served[file.key] += len(sent)
        self.wfile.write(sent)
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True

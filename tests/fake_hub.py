"""A fake Hugging Face hub on 127.0.0.1 for the pull tests and the pull benchmark.

It speaks the URL shapes and headers huggingface_hub 2.x uses, over real HTTP:

    GET  /api/models/<owner>/<name>[/revision/<rev>][?blobs=true]   model info with `siblings` (size, blobId, lfs)
    GET  /api/models/<owner>/<name>/tree/<rev>[/<folder>]           the tree listing ([?recursive=true])
    HEAD|GET /<owner>/<name>/resolve/<rev>/<path>                   a file: X-Repo-Commit, ETag / X-Linked-Etag,
                                                                    X-Linked-Size, Content-Length, Range requests
    HEAD|GET /cdn/<owner>/<name>/<commit>/<path>                    where LFS files redirect to, when asked

Large files (GGUF, safetensors, .bin …) are "LFS" files, listed with their sha256; small ones carry their git object
id only. `redirect_lfs` makes LFS files answer with a 302 to the CDN port (another origin, as the real hub sends them
to its CDN). Unknown repositories, revisions and files get a 404 with the hub's `X-Error-Code`.

Tests can break things: `corrupt` serves a file with one byte changed (its checksums stay), `cut_after` closes the
next download of a file once it reaches a byte offset, `stall_after` holds it there until `release()`. Every request
is logged with the bytes of body it sent. Bodies go out with sendfile(2), so the hub itself costs little time.

`python -m tests.fake_hub <owner>/<repo>/<path>=<file> ...` serves files from a process of its own (as a real hub
is another machine: the benchmark's client then shares no interpreter with it); it prints its address and serves
until its standard input closes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".ot", ".pt", ".pth")
LFS_MIN_SIZE = 10 * 1024 * 1024
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<rev>[0-9a-f]{40})/(?P<path>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class HubEntry:
    """A file of a fake repository: its bytes live in `source`."""

    path: str
    source: Path
    size: int
    sha256: str
    git_oid: str  # for an LFS file, the object id of its LFS pointer (as on the real hub)
    lfs: bool
    pointer_size: int


@dataclass
class HubRepo:
    repo_id: str
    commit: str
    files: dict[str, HubEntry]


@dataclass(frozen=True)
class Served:
    """One request the hub answered: `sent` is the bytes of body it sent (-1: the client went away mid-way);
    `authorization` the Authorization header it came with."""

    method: str
    path: str
    range: str | None
    status: int
    sent: int
    authorization: str | None = None


@dataclass
class _Fault:
    kind: str  # cut or stall
    offset: int
    reached: threading.Event = field(default_factory=threading.Event)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[Served] = []
        self.redirect_lfs = False
        self._root = Path(tempfile.mkdtemp(prefix="fake-hub-"))
        self._lock = threading.Lock()
        self._corrupt: set[tuple[str, str]] = set()
        self._faults: dict[tuple[str, str], _Fault] = {}
        self._released = threading.Event()
        self._hashes: dict[Path, str] = {}
        self._servers = [_Server(self, "hub"), _Server(self, "cdn")]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def start(self) -> FakeHub:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, name=f"fake-hub-{server.role}", daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_repo(self, repo_id: str, files: Mapping[str, Path | bytes]) -> HubRepo:
        """A repository whose files are `files` (path in the repository -> a file on disk, or the bytes)."""
        entries: dict[str, HubEntry] = {}
        for path, content in files.items():
            source = content if isinstance(content, Path) else self._store(repo_id, path, content)
            entries[path] = self._entry(path, source)
        commit = hashlib.sha1(
            json.dumps([repo_id, sorted((p, e.sha256) for p, e in entries.items())]).encode(), usedforsecurity=False
        ).hexdigest()
        repo = HubRepo(repo_id, commit, entries)
        self.repos[repo_id] = repo
        return repo

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve `path` with one byte changed from now on; its listed checksums stay those of the right bytes."""
        self._corrupt.add((repo_id, path))

    def cut_after(self, repo_id: str, path: str, offset: int) -> threading.Event:
        """Close the next download of `path` when it reaches byte `offset`; the event is set when it did."""
        fault = _Fault("cut", offset)
        self._faults[(repo_id, path)] = fault
        return fault.reached

    def stall_after(self, repo_id: str, path: str, offset: int) -> threading.Event:
        """Hold the next download of `path` at byte `offset` until `release()`; the event is set when it is held."""
        self._released.clear()
        fault = _Fault("stall", offset)
        self._faults[(repo_id, path)] = fault
        return fault.reached

    def release(self) -> None:
        self._released.set()

    def downloads(self, repo_id: str, path: str) -> list[Served]:
        """The GET requests that carried `path`'s bytes (from the hub or the CDN)."""
        repo = self.repos[repo_id]
        wanted = {f"/{repo_id}/resolve/{rev}/{quote(path)}" for rev in ("main", repo.commit)}
        wanted.add(f"/cdn/{repo_id}/{repo.commit}/{quote(path)}")
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path in wanted and r.status in (200, 206)]

    def _store(self, repo_id: str, path: str, content: bytes) -> Path:
        target = self._root / repo_id / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return target

    def _entry(self, path: str, source: Path) -> HubEntry:
        size = source.stat().st_size
        if source not in self._hashes:
            with source.open("rb") as content:
                self._hashes[source] = hashlib.file_digest(content, "sha256").hexdigest()
        sha256 = self._hashes[source]
        lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
        if lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
            return HubEntry(path, source, size, sha256, _git_oid(pointer), True, len(pointer))
        return HubEntry(path, source, size, sha256, _git_oid(source.read_bytes()), False, 0)

    def _log(self, served: Served) -> None:
        with self._lock:
            self.requests.append(served)


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: FakeHub, role: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self.role = role


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the hub keeps its own log (FakeHub.requests)."""

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        if path.startswith("/api/models/") and self.command == "GET":
            self._api(path.removeprefix("/api/models/").strip("/").split("/"), query)
        elif found := _CDN.match(path):
            self._file(found["repo"], found["rev"], found["path"], from_cdn=True)
        elif found := _RESOLVE.match(path):
            self._file(found["repo"], found["rev"], found["path"], from_cdn=False)
        else:
            self._error(404, "", "Not found")

    def _repo(self, repo_id: str, revision: str) -> HubRepo | None:
        repo = self.server.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision, repo.commit)
            return None
        return repo

    def _api(self, segments: list[str], query: dict[str, list[str]]) -> None:
        repo_id, tail = "/".join(segments[:2]), segments[2:]
        revision = tail[1] if len(tail) >= 2 and tail[0] in ("revision", "tree") else "main"
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        if tail and tail[0] == "tree":
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            self._json(_tree(repo, "/".join(tail[2:]), recursive))
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        self._json(_model_info(repo, blobs))

    def _file(self, repo_id: str, revision: str, path: str, from_cdn: bool) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        entry = repo.files.get(path)
        if entry is None:
            self._error(404, "EntryNotFound", f'{path} does not exist on "{revision}"', repo.commit)
            return
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if not from_cdn:
            headers["X-Repo-Commit"] = repo.commit
        if entry.lfs:
            headers |= {"ETag": f'"{entry.sha256}"', "X-Linked-Etag": f'"{entry.sha256}"'}
            headers["X-Linked-Size"] = str(entry.size)
            if self.server.hub.redirect_lfs and not from_cdn:
                location = f"{self.server.hub.cdn_url}/cdn/{repo_id}/{repo.commit}/{quote(path)}"
                self._answer(302, headers | {"Location": location, "Content-Length": "0"})
                return
        else:
            headers["ETag"] = f'"{entry.git_oid}"'
        self._send_file(repo, entry, headers)

    def _send_file(self, repo: HubRepo, entry: HubEntry, headers: dict[str, str]) -> None:
        requested = self.headers.get("Range")
        start, end = 0, entry.size
        if requested and (bounds := _RANGE.match(requested.strip())):
            start = int(bounds[1])
            end = min(int(bounds[2]) + 1, entry.size) if bounds[2] else entry.size
            if start >= entry.size:
                self._answer(416, headers | {"Content-Range": f"bytes */{entry.size}", "Content-Length": "0"})
                return
        status = 206 if requested else 200
        if requested:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        headers["Content-Length"] = str(end - start)
        self._answer(status, headers, log=False)
        if self.command == "HEAD":
            self.server.hub._log(Served("HEAD", self.path, requested, status, 0, self.headers.get("Authorization")))
            return
        key = (repo.repo_id, entry.path)
        hub = self.server.hub
        fault = hub._faults.get(key)
        if fault is not None and start < fault.offset < end:
            del hub._faults[key]
            stop_at = fault.offset
        else:
            fault, stop_at = None, end
        sent = self._body(entry, start, stop_at, corrupt=key in hub._corrupt)
        if fault is not None:
            fault.reached.set()
            if fault.kind == "stall":
                hub._released.wait(60)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        hub._log(Served("GET", self.path, requested, status, sent, self.headers.get("Authorization")))

    def _body(self, entry: HubEntry, start: int, end: int, corrupt: bool) -> int:
        """Send bytes [start, end) of the file; with `corrupt`, the byte in the middle of the file is changed."""
        flipped = entry.size // 2 if corrupt else -1
        sent = 0
        try:
            with entry.source.open("rb") as source:
                if start <= flipped < end:
                    sent += self.connection.sendfile(source, start, flipped - start) if flipped > start else 0
                    source.seek(flipped)
                    self.connection.sendall(bytes([source.read(1)[0] ^ 0xFF]))
                    sent += 1
                    start = flipped + 1
                if end > start:
                    sent += self.connection.sendfile(source, start, end - start)
        except OSError:
            self.close_connection = True
            return -1
        return sent

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"", log: bool = True) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        if log:
            sent = len(body) if self.command != "HEAD" else 0
            authorization = self.headers.get("Authorization")
            self.server.hub._log(
                Served(self.command, self.path, self.headers.get("Range"), status, sent, authorization)
            )

    def _json(self, content: Any) -> None:
        body = json.dumps(content).encode()
        self._answer(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._answer(status, headers, body)


def _model_info(repo: HubRepo, blobs: bool) -> dict[str, Any]:
    siblings: list[dict[str, Any]] = []
    for entry in repo.files.values():
        sibling: dict[str, Any] = {"rfilename": entry.path}
        if blobs:
            sibling |= {"blobId": entry.git_oid, "size": entry.size}
            if entry.lfs:
                sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        siblings.append(sibling)
    owner = repo.repo_id.split("/")[0]
    return {
        "_id": repo.commit[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": owner,
        "sha": repo.commit,
        "lastModified": "2026-01-01T00:00:00.000Z",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "private": False,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": sum(entry.size for entry in repo.files.values()),
    }


def _tree(repo: HubRepo, folder: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    listed: list[dict[str, Any]] = []
    folders: set[str] = set()
    for entry in repo.files.values():
        if not entry.path.startswith(prefix):
            continue
        rest = entry.path.removeprefix(prefix)
        if "/" in rest and not recursive:
            folders.add(prefix + rest.split("/")[0])
            continue
        item: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": entry.path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        listed.append(item)
    listed += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": name} for name in sorted(folders)]
    return listed


def main(arguments: list[str]) -> None:
    repos: dict[str, dict[str, Path | bytes]] = {}
    for argument in arguments:
        target, _, source = argument.partition("=")
        owner, name, path = target.split("/", 2)
        repos.setdefault(f"{owner}/{name}", {})[path] = Path(source)
    with FakeHub() as hub:
        for repo_id, files in repos.items():
            hub.add_repo(repo_id, files)
        print(hub.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1:])

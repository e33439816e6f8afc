"""A file's bytes from the hub to a partial file on disk, hashed on the way, resuming what an earlier attempt left.

The partial file keeps a stable name, so a pull that was killed (or lost its connection) continues with a `Range`
request from the bytes already there (hashing those first); a server that ignores the range sends the file from the
start. Each chunk is hashed as soon as it is written, while it is still in the CPU's cache. Receiving and writing a
98 MB file takes ~40 ms of CPU here and hashing it ~60 ms — together still less than curl spends on the file alone.
A second thread to hash while the next chunk arrives wins on an idle machine, but loses when the cores are busy
(another pull, a model generating): measured, in line was the steadier of the two.

Plain `urllib` carries the bytes: its response reads straight into our buffer, it follows redirects (a hub sends
large files to a CDN) and honours HTTP(S)_PROXY. Authorization is never sent on to another host than the one asked.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sop_llm.infra.errors import DownloadError

CHUNK = 4 << 20  # bytes received, written and hashed at a time
RETRIES = 5  # attempts in a row that bring no new byte before a download gives up
TIMEOUT_S = 30.0  # a connection that sends nothing for this long is dropped (and resumed)

# Told the file's size on disk as it grows; may raise to stop the download (the partial file stays).
Position = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Checksum:
    """The sha256 of a file's bytes and, when asked for, its git object id (what the hub lists for small files)."""

    sha256: str
    git_oid: str | None


class _Hasher:
    def __init__(self, size: int, git: bool) -> None:
        self._sha256 = hashlib.sha256()
        self._sha1 = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False) if git else None

    def update(self, data: memoryview) -> None:
        self._sha256.update(data)
        if self._sha1 is not None:
            self._sha1.update(data)

    def result(self) -> Checksum:
        return Checksum(self._sha256.hexdigest(), self._sha1.hexdigest() if self._sha1 is not None else None)


def hash_file(path: Path, size: int, git: bool, at: Position | None = None) -> Checksum:
    """The checksum of a file on disk (`size` bytes, for the git object id); `at` follows the reading."""
    hasher = _Hasher(size, git)
    _hash_existing(path, hasher, at)
    return hasher.result()


def _hash_existing(path: Path, hasher: _Hasher, at: Position | None) -> None:
    buffer = memoryview(bytearray(CHUNK))
    done = 0
    with open(path, "rb", buffering=0) as source:
        while n := source.readinto(buffer):
            hasher.update(buffer[:n])
            done += n
            if at is not None:
                at(done)


def download(url: str, headers: dict[str, str], partial: Path, size: int, git: bool, at: Position) -> Checksum:
    """Bring `partial` to the `size` bytes at `url` and return their checksum. A broken connection is resumed, up
    to RETRIES times in a row without progress; `git`: compute the git object id as well."""
    failures = 0
    while True:
        before = partial.stat().st_size if partial.exists() else 0
        try:
            return _attempt(url, headers, partial, size, git, at)
        except _Interrupted as exc:
            after = partial.stat().st_size if partial.exists() else 0
            failures = 1 if after > before else failures + 1
            if failures > RETRIES:
                raise DownloadError(f"downloading {url} failed {RETRIES} times in a row: {exc}") from exc
            time.sleep(min(0.2 * 2**failures, 5.0))


class _Interrupted(Exception):
    """The connection broke, or the server sent fewer bytes than it announced: worth another attempt."""


class _RangeRefused(Exception):
    """The server cannot serve the rest of the partial file (it changed, or is shorter): start from 0."""


def _attempt(url: str, headers: dict[str, str], partial: Path, size: int, git: bool, at: Position) -> Checksum:
    hasher = _Hasher(size, git)
    with open(partial, "a+b", buffering=0) as out:
        have = out.seek(0, os.SEEK_END)
        if have > size:
            out.truncate(0)
            have = 0
        if have == size:  # a complete earlier download, killed before it was checked
            _hash_existing(partial, hasher, at)
            return hasher.result()
        try:
            response = _open(url, headers, have)
        except _RangeRefused as exc:
            out.truncate(0)
            raise _Interrupted("the server refused to resume; starting again") from exc
        with response:
            if have and response.status == 200:  # the server ignored the range
                out.truncate(0)
                have = 0
            elif have:
                _hash_existing(partial, hasher, at)
            _receive(response, out, hasher, have, size, at)
        return hasher.result()


def _open(url: str, headers: dict[str, str], start: int) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={**headers, "Accept-Encoding": "identity"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response: http.client.HTTPResponse = _OPENER.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and start:
            raise _RangeRefused from exc
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Interrupted(f"the server answered {exc.code}") from exc
        raise DownloadError(f"downloading {url} failed: the server answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Interrupted(str(exc) or type(exc).__name__) from exc
    if start and response.status == 206 and not _range_starts_at(response, start):
        response.close()
        raise DownloadError(f"downloading {url} failed: the server answered another range than the one asked")
    return response


def _range_starts_at(response: http.client.HTTPResponse, start: int) -> bool:
    content_range = response.headers.get("Content-Range", "")  # bytes <first>-<last>/<size>
    return content_range.removeprefix("bytes ").split("-", 1)[0].strip() == str(start)


def _receive(
    response: http.client.HTTPResponse, out: io.FileIO, hasher: _Hasher, have: int, size: int, at: Position
) -> None:
    """Append the response's bytes to `out` (which holds `have` of the file's `size` bytes), hashing them."""
    buffer = memoryview(bytearray(CHUNK))
    position = have
    while position < size:
        try:
            n = response.readinto(buffer[: min(CHUNK, size - position)])
        except (OSError, http.client.HTTPException) as exc:
            raise _Interrupted(str(exc) or type(exc).__name__) from exc
        if not n:
            raise _Interrupted(f"the connection closed after {position} of {size} bytes")
        out.write(buffer[:n])  # an unbuffered regular file takes it all (or raises: a full disk)
        hasher.update(buffer[:n])
        position += n
        at(position)
    if response.read(1):
        raise DownloadError(f"the server sent more than the {size} bytes the hub lists for this file")


class _SameHostAuthorization(urllib.request.HTTPRedirectHandler):
    """Follows redirects, dropping the Authorization header when one leads to another host (a CDN)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_SameHostAuthorization)

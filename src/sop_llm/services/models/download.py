"""One file of a repository into the huggingface_hub cache, checked against the hub's checksum.

The cache keeps huggingface_hub's own layout — `blobs/<etag>` and `snapshots/<commit>/<path>` linking to it — so
the hub's tools (`hf cache`, `scan_cache_dir`) see the files. The bytes go to `blobs/<etag>.incomplete` (a name
a later pull finds again, to resume), are hashed as they arrive, and become the blob only when the checksum matches
what the hub lists: a file's sha256 for Git LFS files, the git object id for small ones. A mismatch deletes them.
`hf_hub_download` then links the checked blob into the snapshot without downloading it again.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sop_llm.infra.errors import ChecksumMismatchError, DownloadError, InsufficientStorageError
from sop_llm.services.models.choice import HubFile
from sop_llm.services.models.hub import Hub, hub_errors
from sop_llm.services.models.progress import FileMeter
from sop_llm.services.models.transfer import Checksum, download, hash_file

_ETAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


@dataclass(frozen=True, slots=True)
class CachedFile:
    """A file of the model in the cache: `local` is its path in the snapshot, `sha256` the hash of its bytes."""

    file: HubFile
    local: Path
    sha256: str


def fetch(hub: Hub, repo: str, revision: str, file: HubFile, meter: FileMeter) -> CachedFile:
    """Download `file` of `repo` at `revision` into the cache, or check the copy already there (blocking)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import WeakFileLock, build_hf_headers  # type: ignore[attr-defined]  # lazy exports

    if file.sha256 is None and file.blob_id is None:
        raise DownloadError(f"{hub.address} lists no checksum for {repo}/{file.path}; it cannot be verified")
    url = hf_hub_url(repo, file.path, revision=revision, endpoint=hub.endpoint)
    headers = build_hf_headers(token=hub.token)
    with hub_errors(hub, repo):
        metadata = get_hf_file_metadata(url, token=hub.token, endpoint=hub.endpoint)
    if metadata.etag is None or not _ETAG.fullmatch(metadata.etag):  # it names the blob: no path may hide in it
        raise DownloadError(f"{hub.address} gave no usable ETag for {repo}/{file.path}; is HF_ENDPOINT a model hub?")
    if urlsplit(metadata.location).netloc != urlsplit(url).netloc:  # a CDN: the hub's token stays with the hub
        headers = {key: value for key, value in headers.items() if key.lower() != "authorization"}
    folder = hub.repo_folder(repo)
    blob = folder / "blobs" / metadata.etag
    lock = hub.cache() / ".locks" / folder.name / f"{metadata.etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    blob.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        checksum = _checked_blob(blob, file, meter)
        if checksum is None:
            checksum = _download_blob(metadata.location, headers, blob, file, meter)
    meter.verified()
    with hub_errors(hub, repo):
        local = hf_hub_download(
            repo, file.path, revision=revision, cache_dir=hub.cache(), endpoint=hub.endpoint, token=hub.token
        )
    return CachedFile(file=file, local=Path(str(local)), sha256=checksum.sha256)


def _checked_blob(blob: Path, file: HubFile, meter: FileMeter) -> Checksum | None:
    """The checksum of a blob already in the cache, or None when there is none (a bad one is deleted)."""
    if not blob.exists():
        return None
    checksum = hash_file(blob, file.size, file.sha256 is None, meter.at)
    if _matches(checksum, file):
        return checksum
    blob.unlink()
    return None


def _download_blob(location: str, headers: dict[str, str], blob: Path, file: HubFile, meter: FileMeter) -> Checksum:
    partial = blob.with_name(blob.name + ".incomplete")
    try:
        checksum = download(location, headers, partial, file.size, file.sha256 is None, meter.at)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InsufficientStorageError(f"the disk of {blob.parent} is full; free space and pull again") from exc
        raise DownloadError(f"cannot write {partial}: {exc}") from exc
    if not _matches(checksum, file):
        partial.unlink(missing_ok=True)
        expected = file.sha256 or file.blob_id
        found = checksum.sha256 if file.sha256 else checksum.git_oid
        raise ChecksumMismatchError(
            f"{file.path}: the downloaded bytes hash to {found}, not to the {expected} the hub lists; the file was "
            "deleted and nothing was registered (pull again; if it repeats, the hub's copy is damaged)",
            details={"file": file.path, "expected": expected, "found": found},
        )
    os.replace(partial, blob)
    return checksum


def _matches(checksum: Checksum, file: HubFile) -> bool:
    if file.sha256 is not None:
        return checksum.sha256 == file.sha256.lower()
    return checksum.git_oid == (file.blob_id or "").lower()

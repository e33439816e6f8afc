"""Deleting a pulled model's files from the huggingface_hub cache, keeping what something else still uses.

A snapshot's files are links to blobs, and two files (two names of one GGUF, or one file at two commits) can share
a blob: a file's link goes, its blob only when no link of the repository points at it any more. When a repository
has no snapshot left, its whole folder (refs, leftover partial downloads) and its lock folder go too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from sop_llm.services.models.hub import Hub


def delete_files(hub: Hub, repo: str, revision: str, paths: Iterable[str]) -> int:
    """Delete `paths` (paths in the repository) of `revision` from the cache; the bytes freed (blocking)."""
    folder = hub.repo_folder(repo)
    snapshot = hub.snapshot(repo, revision)
    if not folder.is_dir():
        return 0
    freed = 0
    blobs: set[Path] = set()
    for path in paths:
        pointer = snapshot / path
        if pointer.is_symlink():
            blobs.add(Path(os.path.realpath(pointer)))
            pointer.unlink()
        elif pointer.is_file():  # a cache without links (HF_HUB_DISABLE_SYMLINKS): the file is the copy
            freed += pointer.stat().st_size
            pointer.unlink()
        _remove_empty_parents(pointer.parent, folder / "snapshots")
    still_linked = _linked_blobs(folder / "snapshots")
    for blob in blobs - still_linked:
        if blob.is_file():
            freed += blob.stat().st_size
            blob.unlink()
    snapshots = folder / "snapshots"
    if not snapshots.is_dir() or not any(snapshots.iterdir()):
        freed += _folder_bytes(folder / "blobs")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(hub.cache() / ".locks" / folder.name, ignore_errors=True)
    return freed


def _linked_blobs(snapshots: Path) -> set[Path]:
    linked: set[Path] = set()
    for root, _, names in os.walk(snapshots):
        for name in names:
            link = Path(root) / name
            if link.is_symlink():
                linked.add(Path(os.path.realpath(link)))
    return linked


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to (and including) the snapshot folder below `stop` while empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            return
        folder = folder.parent


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0

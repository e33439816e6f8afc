"""Where file contents live. One small interface, so another store (S3-compatible, say) can stand in for the local
folder; every process that serves files or finalizes batches must see the same store (with the local folder: the
same FILES_DIR, a shared volume when they run on different machines)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

READ_CHUNK = 1024 * 1024


class FileStore(Protocol):
    async def put(self, file_id: str, data: bytes) -> None:
        """Store `data` under `file_id`, replacing what was there; nothing is visible until it is all written."""

    async def put_from(self, file_id: str, source: Path) -> None:
        """Store the contents of a local file (an upload spooled to disk)."""

    async def read(self, file_id: str) -> bytes: ...

    def stream(self, file_id: str) -> AsyncIterator[bytes]:
        """The contents in pieces, for answers too large to hold in memory at once."""

    async def delete(self, file_id: str) -> None:
        """Remove the contents; a file that is not there is not an error."""


class LocalFileStore:
    """Contents as files in one folder, written to a temporary name and renamed into place."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _path(self, file_id: str) -> Path:
        if not file_id or "/" in file_id or "\\" in file_id or file_id.startswith("."):
            raise ValueError(f"not a file id: {file_id!r}")
        return self._folder / file_id

    def _write(self, file_id: str, data: bytes | Path) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        target = self._path(file_id)
        partial = target.with_name(f".{file_id}.{os.getpid()}.partial")
        if isinstance(data, Path):
            with data.open("rb") as src, partial.open("wb") as dst:
                while piece := src.read(READ_CHUNK):
                    dst.write(piece)
        else:
            partial.write_bytes(data)
        partial.replace(target)

    async def put(self, file_id: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, file_id, data)

    async def put_from(self, file_id: str, source: Path) -> None:
        await asyncio.to_thread(self._write, file_id, source)

    async def read(self, file_id: str) -> bytes:
        return await asyncio.to_thread(self._path(file_id).read_bytes)

    async def stream(self, file_id: str) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(self._path(file_id).open, "rb")
        try:
            while piece := await asyncio.to_thread(handle.read, READ_CHUNK):
                yield piece
        finally:
            handle.close()

    async def delete(self, file_id: str) -> None:
        await asyncio.to_thread(self._path(file_id).unlink, True)

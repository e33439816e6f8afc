"""FileService: upload, list, read and delete files, each visible only to the caller that owns it (anyone else is
told it does not exist). Metadata is in the database, contents in the FileStore."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.database import transaction
from sop_llm.infra.errors import BadRequestError, NotFoundError
from sop_llm.services.files.model import FileRow
from sop_llm.services.files.store import FileStore

UPLOAD_PURPOSES = ("batch",)


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


class FileService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], store: FileStore, max_lines: int) -> None:
        """`max_lines`: the most request lines a batch input file may have."""
        self._sessions = sessions
        self.store = store
        self._max_lines = max_lines

    def _session(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions, "the file database")

    async def upload(
        self, source: Path, size: int, lines: int, filename: str, purpose: str, owner: str | None
    ) -> FileRow:
        """Keep an uploaded file (spooled to `source`, `size` bytes of `lines` lines)."""
        if purpose not in UPLOAD_PURPOSES:
            raise BadRequestError(
                f"purpose: '{purpose}' is not served here; upload batch input files with purpose 'batch'",
                param="purpose",
            )
        if size == 0:
            raise BadRequestError("file: is empty; a batch input file holds one JSON request per line", param="file")
        if lines > self._max_lines:
            raise BadRequestError(
                f"file: has {lines} lines; a batch takes at most {self._max_lines} (BATCH_MAX_LINES), split it",
                param="file",
            )
        row = FileRow(
            id=new_file_id(),
            owner=owner,
            purpose=purpose,
            filename=filename[:255] or "upload.jsonl",
            bytes=size,
            lines=lines,
            created_at=datetime.now(UTC),
        )
        await self.store.put_from(row.id, source)
        async with self._session() as session:
            session.add(row)
        return row

    async def save_output(self, file_id: str, source: Path, lines: int, filename: str, owner: str | None) -> FileRow:
        """Keep (or replace) a file the service produced, such as a batch's results (`lines` lines in `source`)."""
        size = (await asyncio.to_thread(source.stat)).st_size
        row = FileRow(
            id=file_id,
            owner=owner,
            purpose="batch_output",
            filename=filename,
            bytes=size,
            lines=lines,
            created_at=datetime.now(UTC),
        )
        await self.store.put_from(file_id, source)
        async with self._session() as session:
            await session.merge(row)
        return row

    async def get(self, file_id: str, owner: str | None) -> FileRow:
        async with self._session() as session:
            row = await session.get(FileRow, file_id)
        if row is None or row.owner != owner:
            raise NotFoundError(f"no file with id '{file_id}'", param="file_id")
        return row

    async def search(
        self, owner: str | None, purpose: str | None, limit: int, after: str | None, newest_first: bool
    ) -> tuple[list[FileRow], bool]:
        """A page of the owner's files after the file `after`, and whether more follow."""
        query = select(FileRow).where(FileRow.owner.is_(None) if owner is None else FileRow.owner == owner)
        if purpose:
            query = query.where(FileRow.purpose == purpose)
        order = (FileRow.created_at.desc(), FileRow.id.desc()) if newest_first else (FileRow.created_at, FileRow.id)
        async with self._session() as session:
            if after is not None:
                cursor = await session.get(FileRow, after)
                if cursor is None or cursor.owner != owner:
                    raise BadRequestError(f"after: no file with id '{after}'", param="after")
                if newest_first:
                    query = query.where(
                        (FileRow.created_at < cursor.created_at)
                        | ((FileRow.created_at == cursor.created_at) & (FileRow.id < cursor.id))
                    )
                else:
                    query = query.where(
                        (FileRow.created_at > cursor.created_at)
                        | ((FileRow.created_at == cursor.created_at) & (FileRow.id > cursor.id))
                    )
            rows = list(await session.scalars(query.order_by(*order).limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    async def content(self, file_id: str, owner: str | None) -> tuple[FileRow, AsyncIterator[bytes]]:
        row = await self.get(file_id, owner)
        return row, self.store.stream(file_id)

    async def read(self, file_id: str, owner: str | None) -> tuple[FileRow, bytes]:
        row = await self.get(file_id, owner)
        return row, await self.store.read(file_id)

    async def delete(self, file_id: str, owner: str | None) -> None:
        await self.get(file_id, owner)
        async with self._session() as session:
            await session.execute(delete(FileRow).where(FileRow.id == file_id))
        await self.store.delete(file_id)

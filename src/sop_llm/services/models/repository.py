"""PulledModels: the registry of pulled models, kept in the service's database beside its other state.

A model is found by its served name; `hf.co/<name>` (Ollama's spelling) finds the same one. Removing a model also
deletes its files from the hub cache, except those another registered model still uses, and tells how many bytes
that freed. Database failures become ServiceUnavailableError (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.database import transaction
from sop_llm.infra.errors import ModelNotFoundError
from sop_llm.services.models.cache import delete_files
from sop_llm.services.models.hub import Hub
from sop_llm.services.models.model import PulledModelRow
from sop_llm.services.models.spec import served_name


@dataclass(frozen=True, slots=True)
class Removal:
    """A removed model and the bytes its files freed on disk (0 when another model shares them)."""

    model: PulledModelRow
    freed_bytes: int


class PulledModels:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], hub: Hub) -> None:
        """`hub`: whose cache the models' files are in."""
        self._sessions = sessions
        self.hub = hub

    def _session(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions, "the model registry")

    async def add(self, row: PulledModelRow) -> int:
        """Register `row`, replacing a model of the same name (a pull again); the files of the replaced one that
        nothing uses any more are deleted. Returns the bytes that freed."""
        async with self._session() as session:
            previous = await session.get(PulledModelRow, row.name)
            if previous is not None:
                await session.delete(previous)
                await session.flush()
            session.add(row)
        return await self._release(previous) if previous is not None else 0

    async def find(self, name: str) -> PulledModelRow | None:
        """The model served as `name` (or `hf.co/<name>`), None when there is none."""
        async with self._session() as session:
            row = await session.get(PulledModelRow, served_name(name))
        return _utc(row)

    async def get(self, name: str) -> PulledModelRow:
        row = await self.find(name)
        if row is None:
            raise ModelNotFoundError(f"no pulled model '{name}'; `sop-llm models ls` lists them", param="model")
        return row

    async def list(self) -> list[PulledModelRow]:
        """Every pulled model, by name."""
        async with self._session() as session:
            rows = (await session.scalars(select(PulledModelRow).order_by(PulledModelRow.name))).all()
        return [row for row in map(_utc, rows) if row is not None]

    async def remove(self, name: str) -> Removal:
        """Unregister the model served as `name` and delete its files that no other model uses."""
        row = await self.get(name)
        async with self._session() as session:
            await session.execute(delete(PulledModelRow).where(PulledModelRow.name == row.name))
        return Removal(model=row, freed_bytes=await self._release(row))

    async def _release(self, gone: PulledModelRow) -> int:
        """Delete the files of `gone` (no longer registered) that no registered model of its repository uses."""
        async with self._session() as session:
            others: Sequence[PulledModelRow] = (
                await session.scalars(select(PulledModelRow).where(PulledModelRow.repo == gone.repo))
            ).all()
        used = {(other.revision, file["path"]) for other in others for file in other.files}
        unused = [file["path"] for file in gone.files if (gone.revision, file["path"]) not in used]
        if not unused:
            return 0
        return await asyncio.to_thread(delete_files, self.hub, gone.repo, gone.revision, unused)


def _utc(row: PulledModelRow | None) -> PulledModelRow | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    if row is not None and row.pulled_at.tzinfo is None:
        row.pulled_at = row.pulled_at.replace(tzinfo=UTC)
    return row

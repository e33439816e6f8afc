"""ResponseStore: save, read and delete stored responses, each visible only to the caller that created it (another
caller, admins included, is told it does not exist). Database failures become ServiceUnavailableError (503).

Stored responses expire after RESPONSES_TTL_DAYS (as OpenAI keeps them 30 days): an expired one reads as gone at
once, and a save deletes the expired rows at most once an hour per process."""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.database import transaction
from sop_llm.infra.errors import NotFoundError
from sop_llm.services.responses.model import ResponseRow

PURGE_EVERY_S = 3600.0


class ResponseStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_days: float = 0.0) -> None:
        """`ttl_days`: how long a response is kept; 0 keeps it until it is deleted."""
        self._sessions = sessions
        self._ttl = timedelta(days=ttl_days) if ttl_days > 0 else None
        self._purged_at = float("-inf")

    def _expired(self, row: ResponseRow) -> bool:
        if self._ttl is None:
            return False
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        return created < datetime.now(UTC) - self._ttl

    async def _purge_expired(self, session: AsyncSession) -> None:
        if self._ttl is None or time.monotonic() - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = time.monotonic()
        await session.execute(delete(ResponseRow).where(ResponseRow.created_at < datetime.now(UTC) - self._ttl))

    def _session(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions, "the response store")

    async def save(self, body: dict[str, Any], input_items: list[dict[str, Any]], owner: str | None) -> None:
        """Store a response object (as answered) with the items its model was given."""
        row = ResponseRow(
            id=body["id"],
            owner=owner,
            model=body["model"],
            status=body["status"],
            previous_response_id=body.get("previous_response_id"),
            input_items=input_items,
            body=body,
            created_at=datetime.fromtimestamp(body["created_at"], UTC),
        )
        async with self._session() as session:
            await self._purge_expired(session)
            session.add(row)

    async def get(self, response_id: str, owner: str | None, param: str | None = None) -> ResponseRow:
        async with self._session() as session:
            row = await session.get(ResponseRow, response_id)
        if row is None or row.owner != owner or self._expired(row):
            raise NotFoundError(f"no stored response with id '{response_id}'", param=param)
        return row

    async def delete(self, response_id: str, owner: str | None) -> None:
        async with self._session() as session:
            outcome = await session.execute(
                delete(ResponseRow).where(
                    ResponseRow.id == response_id,
                    ResponseRow.owner.is_(None) if owner is None else ResponseRow.owner == owner,
                )
            )
            deleted = bool(outcome.rowcount)  # type: ignore[attr-defined]
        if not deleted:
            raise NotFoundError(f"no stored response with id '{response_id}'")

    async def conversation(self, response_id: str, owner: str | None) -> tuple[ResponseRow, list[dict[str, Any]]]:
        """A stored response and the conversation that continues it: the items its model was given, then the items
        it answered with."""
        row = await self.get(response_id, owner, param="previous_response_id")
        return row, [*row.input_items, *row.body.get("output", [])]

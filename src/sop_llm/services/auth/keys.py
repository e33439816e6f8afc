"""API keys: created with `sop-llm keys create` or `POST /api/v1/admin/keys`, shown once, stored as SHA-256.
Verified keys are remembered for API_KEY_CACHE_SECONDS, so the hot path does not query the database on every
request (a revoked key stops working within that time)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.errors import NotFoundError, ServiceUnavailableError
from sop_llm.services.auth.model import ApiKeyRow
from sop_llm.services.auth.principal import Principal, Scope

KEY_PREFIX = "sop_"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache_seconds: float) -> None:
        self._sessions = sessions
        self._cache_seconds = cache_seconds
        self._verified: dict[str, tuple[float, Principal | None]] = {}

    async def create(self, name: str, scope: Scope) -> tuple[ApiKeyRow, str]:
        """The stored row and the key itself, which exists nowhere else afterwards."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=str(uuid.uuid4()),
            name=name,
            key_hash=key_hash(key),
            prefix=key[:10],
            scope=scope,
            created_at=datetime.now(UTC),
        )
        try:
            async with self._sessions() as session, session.begin():
                session.add(row)
        except SQLAlchemyError as exc:
            raise ServiceUnavailableError(f"the key database is unavailable ({type(exc).__name__})") from exc
        return row, key

    async def list(self) -> list[ApiKeyRow]:
        async with self._sessions() as session:
            return list(await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at)))

    async def revoke(self, key_id: str) -> ApiKeyRow:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = await session.get(ApiKeyRow, key_id)
        if row is None:
            raise NotFoundError(f"no API key with id '{key_id}'", param="key_id")
        self._verified.clear()
        return row

    async def verify(self, key: str) -> Principal | None:
        digest = key_hash(key)
        cached = self._verified.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            async with self._sessions() as session:
                row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise ServiceUnavailableError(
                f"cannot check the API key: the database is unavailable ({type(exc).__name__})", retry_after=2
            ) from exc
        principal = None
        if row is not None and row.revoked_at is None:
            principal = Principal(subject=f"key:{row.id}", scope="admin" if row.scope == "admin" else "user")
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[digest] = (time.monotonic() + self._cache_seconds, principal)
        return principal

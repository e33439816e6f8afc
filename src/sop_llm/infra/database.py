"""The task database: SQLAlchemy 2 async on SQLite (aiosqlite) by default, PostgreSQL (asyncpg) via DATABASE_URL.

Timeouts are short on purpose: a database that does not answer turns into a quick 503, never a hung request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from sop_llm.infra.errors import ServiceUnavailableError
from sop_llm.infra.settings import Settings


class Base(DeclarativeBase):
    """What every table's model derives from; the tables themselves are created by the migrations."""


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url)
    timeout = settings.database_timeout
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return create_async_engine(url, connect_args={"timeout": timeout})
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=timeout,
        connect_args={"timeout": timeout, "command_timeout": timeout},
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession], what: str) -> AsyncIterator[AsyncSession]:
    """A session in a transaction; a database that fails or does not answer becomes a 503 that names `what` (the
    task database, the response store, …) and asks the caller to retry."""
    try:
        async with sessions() as session, session.begin():
            yield session
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        if isinstance(exc, IntegrityError):
            raise
        raise ServiceUnavailableError(
            f"{what} is unavailable ({type(exc).__name__}); retry shortly", retry_after=2
        ) from exc

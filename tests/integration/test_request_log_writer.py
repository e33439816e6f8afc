"""The request log's writer on real databases (SQLite, and a PostgreSQL the test starts itself on a free port): entries wait in a bounded buffer and are written in one batch;
a database that refuses a batch loses nothing (it is written once the table is there); a full buffer lets the
oldest entries go and counts them; bodies are redacted when written; rows past the retention are pruned."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from sop_llm.infra.database import create_engine, session_factory
from sop_llm.infra.redaction import Redactor
from sop_llm.migrations import upgrade
from sop_llm.services.logs.model import RequestLogRow
from sop_llm.services.logs.writer import Entry, RequestLog
from tests.live_server import make_settings
from tests.system.servers import Postgres

pytestmark = pytest.mark.integration


def _entry(n: int, at: float | None = None, body: str | None = None) -> Entry:
    now = time.time() if at is None else at
    return Entry(now, f"key:{n % 3}", "openai", "POST", "/v1/chat/completions", "m", None, 200, None, n, 1, 1.5, None,
                 f"{n:032x}", body, body)  # fmt: skip


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.system)])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of its own."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/log.db"
    server: Postgres = request.getfixturevalue("postgres")
    name = f"log_{uuid.uuid4().hex}"
    engine = create_async_engine(server.url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.exec_driver_sql(f"CREATE DATABASE {name}")
    await engine.dispose()
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def _log(url: str, level: str = "metadata", buffer: int = 1000) -> RequestLog:
    engine = create_engine(make_settings(DATABASE_URL=url))
    return RequestLog(session_factory(engine), level, 60, buffer, 30, Redactor([r"secret-\d+"]))  # type: ignore[arg-type]


async def _count(log: RequestLog) -> int:
    async with log._sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(RequestLogRow)) or 0)


async def test_a_batch_the_database_refuses_is_kept_and_written_later(url: str) -> None:
    log = _log(url)
    for n in range(10):
        log.add(_entry(n))
    assert await log.flush() is False  # no table yet
    log.add(_entry(10))
    await asyncio.to_thread(upgrade, url)
    assert await log.flush() is True
    assert (await _count(log), log.written, log.dropped) == (11, 11, 0)
    async with log._sessions() as session:
        tokens = list(await session.scalars(select(RequestLogRow.prompt_tokens).order_by(RequestLogRow.id)))
    assert tokens == list(range(11))  # in arrival order, the kept batch first


async def test_a_full_buffer_lets_the_oldest_entries_go_and_counts_them(url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    log = _log(url, buffer=100)
    for n in range(250):
        log.add(_entry(n))
    assert log.dropped == 150
    assert await log.flush()
    async with log._sessions() as session:
        tokens = list(await session.scalars(select(RequestLogRow.prompt_tokens).order_by(RequestLogRow.id)))
    assert tokens == list(range(150, 250))


async def test_bodies_are_redacted_when_written_and_old_rows_pruned(url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    log = _log(url, level="full")
    log.add(_entry(1, body="my secret-42 is safe"))
    log.add(_entry(2, at=time.time() - 31 * 86400))
    assert await log.flush()
    assert await log.prune() == 1
    async with log._sessions() as session:
        rows = list(await session.scalars(select(RequestLogRow)))
    assert [row.request_body for row in rows] == ["my [REDACTED] is safe"]
    assert rows[0].response_body == "my [REDACTED] is safe"


@pytest.mark.parametrize("level", ["off", "metadata", "full"])
def test_the_level_says_what_is_kept(level: str) -> None:
    log = _log("sqlite+aiosqlite:///:memory:", level=level)
    assert (log.enabled, log.bodies) == (level != "off", level == "full")

"""The request log's writer on real databases (SQLite, and a PostgreSQL the test starts itself on a free port): entries wait in a bounded buffer and are written in one batch;
a database that refuses a batch loses nothing (it is written once the table is there); a full buffer lets the
oldest entries go and counts them; bodies are redacted when written; rows past the retention are pruned."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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


def _varied(n: int, at: float) -> Entry:
    """An entry whose every field depends on `n`, the optional ones None for some."""
    return Entry(at, f"key:{n}", "native", "DELETE", f"/r/{n}", None if n % 2 else f"m{n}", f"d{n}" if n % 3 else None,
                 200 + n % 300, None if n % 5 else f"e{n}", n, n * 7, n / 3, None if n % 4 else n / 7, f"{n:032x}",
                 None, None)  # fmt: skip


async def test_a_large_batch_is_written_whole_in_order_with_every_field_and_its_time_to_the_microsecond(
    url: str,
) -> None:
    """1,000 entries (SQLite takes them in several multi-row statements) come back as they went, in order; each
    arrival time to the microsecond, fractions next to a whole second included."""
    await asyncio.to_thread(upgrade, url)
    log = _log(url, buffer=2000)
    rng = random.Random(5)
    times = [1_800_000_000 + rng.uniform(0, 86400) for _ in range(990)]
    times += [1_800_000_000 + edge for edge in (0.0, 0.0000004, 0.4999995, 0.9999994, 0.9999996, 59.9999999, 1.5)]
    times += [1_800_000_000 + 3.25, 1_800_000_000 + 7, 1_800_000_000 + 0.000001]
    entries = [_varied(n, at) for n, at in enumerate(times)]
    for entry in entries:
        log.add(entry)
    assert await log.flush()
    async with log._sessions() as session:
        rows = list(await session.scalars(select(RequestLogRow).order_by(RequestLogRow.id)))
    assert len(rows) == len(entries) == 1000
    for row, entry in zip(rows, entries, strict=True):
        stored = [getattr(row, field) for field in Entry._fields[1:]]
        assert stored == list(entry[1:]), (stored, entry)
        at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=UTC)
        expected = datetime.fromtimestamp(entry.at, UTC)
        assert abs(at - expected) <= timedelta(microseconds=1), (entry.at, at, expected)


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

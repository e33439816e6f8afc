"""The request log's writer on a real SQLite database: entries wait in a bounded buffer and are written in one batch;
a database that refuses a batch loses nothing (it is written once the table is there); a full buffer lets the
oldest entries go and counts them; bodies are redacted when written; rows past the retention are pruned."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from sop_llm.infra.database import create_engine, session_factory
from sop_llm.infra.redaction import Redactor
from sop_llm.migrations import upgrade
from sop_llm.services.logs.model import RequestLogRow
from sop_llm.services.logs.writer import RequestLog
from tests.live_server import make_settings


def _entry(n: int, at: float | None = None, body: str | None = None) -> dict[str, Any]:
    return {
        "at": time.time() if at is None else at,
        "subject": f"key:{n % 3}",
        "surface": "openai",
        "method": "POST",
        "route": "/v1/chat/completions",
        "model": "m",
        "served_by": None,
        "status": 200,
        "error_code": None,
        "prompt_tokens": n,
        "completion_tokens": 1,
        "latency_ms": 1.5,
        "first_token_ms": None,
        "trace_id": f"{n:032x}",
        "request_body": body,
        "response_body": body,
    }


def _log(url: str, level: str = "metadata", buffer: int = 1000) -> RequestLog:
    engine = create_engine(make_settings(DATABASE_URL=url))
    return RequestLog(session_factory(engine), level, 60, buffer, 30, Redactor([r"secret-\d+"]))  # type: ignore[arg-type]


async def _count(log: RequestLog) -> int:
    async with log._sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(RequestLogRow)) or 0)


async def test_a_batch_the_database_refuses_is_kept_and_written_later(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
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


async def test_a_full_buffer_lets_the_oldest_entries_go_and_counts_them(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    await asyncio.to_thread(upgrade, url)
    log = _log(url, buffer=100)
    for n in range(250):
        log.add(_entry(n))
    assert log.dropped == 150
    assert await log.flush()
    async with log._sessions() as session:
        tokens = list(await session.scalars(select(RequestLogRow.prompt_tokens).order_by(RequestLogRow.id)))
    assert tokens == list(range(150, 250))


async def test_bodies_are_redacted_when_written_and_old_rows_pruned(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
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

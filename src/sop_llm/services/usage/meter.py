"""Usage accounting: every metered request adds to an in-memory tally per (caller, model, UTC day); a background
loop writes the tallies every USAGE_FLUSH_SECONDS as one batch of atomic increments (`INSERT … ON CONFLICT DO
UPDATE SET n = n + excluded.n`), so a request never waits on the database, no row is updated per request, and any
number of replicas add to the same rows without losing a count. Rows are written in key order, so two replicas
flushing at once cannot deadlock. A batch the database refuses is kept and tried again with the next one; what is
still in memory when a process is killed (at most one interval) is the only thing that can be lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sop_llm.infra.backoff import Backoff
from sop_llm.services.usage.model import UsageRow
from sop_llm.services.usage.record import RequestRecord

ANONYMOUS_SUBJECT = "anonymous"
UNKNOWN_MODEL = "-"
_COUNTS = ("requests", "errors", "prompt_tokens", "completion_tokens", "latency_ms")


@dataclass(slots=True)
class Tally:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency_ms += other.latency_ms


def today() -> date:
    return datetime.now(UTC).date()


Key = tuple[str, str, date]


class UsageMeter:
    def __init__(self, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], flush_seconds: float) -> None:
        self._engine = engine
        self._sessions = sessions
        self._flush_seconds = flush_seconds
        self._pending: dict[Key, Tally] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff("usage: database")
        self.flushes = 0

    def record(self, subject: str, model: str, usage: Tally, day: date | None = None) -> None:
        key = (subject, model, day or today())
        tally = self._pending.get(key)
        if tally is None:
            self._pending[key] = tally = Tally()
        tally.add(usage)

    def record_request(self, record: RequestRecord, failed: bool, seconds: float) -> None:
        """One request (or task run) ended: count it for its caller when it reached a model or failed."""
        failed = failed or record.failed
        if record.model is None and not failed:
            return
        tally = Tally(1, int(failed), record.prompt_tokens, record.completion_tokens, seconds * 1000)
        self.record(record.subject or ANONYMOUS_SUBJECT, record.model or UNKNOWN_MODEL, tally)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="usage-flush")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()

    async def flush(self) -> bool:
        """Write what is pending; False (and kept for the next try) when the database refused it."""
        async with self._lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return True
            try:
                await self._write(batch)
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                self._backoff.failed(exc, "usage kept in memory until the next flush")
                for key, tally in batch.items():
                    self.record(*key[:2], tally, day=key[2])
                return False
            self.flushes += 1
            return True

    async def _write(self, batch: dict[Key, Tally]) -> None:
        rows = [
            {"subject": s, "model": m, "day": d, **{name: getattr(t, name) for name in _COUNTS}}
            for (s, m, d), t in sorted(batch.items())
        ]
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        statement = insert(UsageRow)
        statement = statement.on_conflict_do_update(
            index_elements=["subject", "model", "day"],
            set_={name: getattr(UsageRow, name) + getattr(statement.excluded, name) for name in _COUNTS},
        )
        async with self._sessions() as session, session.begin():
            await session.execute(statement, rows)

    async def report(
        self,
        subject: str | None = None,
        model: str | None = None,
        since: date | None = None,
        until: date | None = None,
    ) -> list[dict[str, Any]]:
        """Rows per caller, model and day (this process's pending counts included), oldest day first."""
        await self.flush()
        query = select(UsageRow).order_by(UsageRow.day, UsageRow.subject, UsageRow.model)
        if subject is not None:
            query = query.where(UsageRow.subject == subject)
        if model is not None:
            query = query.where(UsageRow.model == model)
        if since is not None:
            query = query.where(UsageRow.day >= since)
        if until is not None:
            query = query.where(UsageRow.day <= until)
        async with self._sessions() as session:
            rows: Sequence[UsageRow] = list(await session.scalars(query))
        return [usage_view(row) for row in rows]


def usage_view(row: UsageRow) -> dict[str, Any]:
    return {
        "subject": row.subject,
        "model": row.model,
        "day": row.day.isoformat(),
        "requests": row.requests,
        "errors": row.errors,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.prompt_tokens + row.completion_tokens,
        "avg_latency_ms": round(row.latency_ms / row.requests, 3) if row.requests else 0.0,
    }

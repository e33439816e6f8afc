"""The request log's writer. A request that ends hands its entry (a plain dict) to `add`, which only appends it to a
bounded buffer; a background loop writes the buffer every REQUEST_LOG_FLUSH_SECONDS as one multi-row insert, so
no request waits on the database. Bodies (REQUEST_LOG=full) are redacted at that point, in a worker thread, not
on the request path. When the database cannot take a batch, the entries are kept for the next try; when the
buffer is full, the oldest entries make way and are counted (`dropped`), so memory stays bounded whatever the
database does. Rows older than REQUEST_LOG_RETENTION_DAYS are deleted once an hour."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Literal, NamedTuple

from loguru import logger
from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.backoff import Backoff
from sop_llm.infra.redaction import Redactor
from sop_llm.services.logs.model import RequestLogRow

Level = Literal["off", "metadata", "full"]
PRUNE_SECONDS = 3600.0


class Entry(NamedTuple):
    """One request, in the request_log table's column order (model.py has what each column means)."""

    at: float  # Unix time; a datetime once written
    subject: str
    surface: str
    method: str
    route: str
    model: str | None
    served_by: str | None
    status: int
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    first_token_ms: float | None
    trace_id: str
    request_body: str | None
    response_body: str | None


# The batch goes to the driver as it is, not through the ORM (that took ~10 µs a row on the event loop). PostgreSQL
# takes it as one prepared statement executed for every row (asyncpg sends them pipelined). SQLite takes it as
# multi-row INSERTs, each entry's fields bound as they are (`INSERT … SELECT … FROM (VALUES (?, …), …)`), in chunks
# of a power of two rows (at most _SQLITE_CHUNK), so that the few statements stay prepared in the driver's cache.
# SQLite writes the time as SQLAlchemy stores a DateTime there (YYYY-MM-DD HH:MM:SS.ffffff, from the whole seconds
# and the microseconds apart, so that nothing rounds up to the next second). Measured on 3,000 rows with the
# table's four indexes: ~8 µs a row of SQLite's work (a third of it writing the time), against ~12 µs when the
# batch went as one JSON array that SQLite unpacked. Plain `?` parameters, not numbered ones: SQLite looks a
# numbered parameter up in a list, so preparing a 256-row statement of `?NNN` took ~27 ms, and each connection
# prepares each size once. Python work a row in a thread, or the connection thread taking the GIL after every row
# (executemany), had cost the event loop more in handovers than the rows cost to write.
_COLUMNS = ", ".join(Entry._fields)
_FIELDS = len(Entry._fields)
_SQLITE_CHUNK = 256  # rows a statement: 16 parameters each, below SQLite's limit of 32,766


# The time, from the first field (column1 of the VALUES rows).
_SQLITE_TIME = (
    "strftime('%Y-%m-%d %H:%M:%S', CAST(column1 AS INTEGER), 'unixepoch')"
    " || printf('.%06d', min(999999, round((column1 - CAST(column1 AS INTEGER)) * 1000000)))"
)
_SQLITE_INSERTS = {
    rows: f"INSERT INTO request_log ({_COLUMNS}) SELECT {_SQLITE_TIME}, "
    + ", ".join(f"column{i}" for i in range(2, _FIELDS + 1))
    + " FROM (VALUES "
    + ", ".join(["(" + ", ".join("?" * _FIELDS) + ")"] * rows)
    + ")"
    for rows in (1 << bit for bit in range(_SQLITE_CHUNK.bit_length()))
}
_PLACEHOLDERS = {
    "numeric_dollar": lambda n: ", ".join(f"${i}" for i in range(1, n + 1)),
    "format": lambda n: ", ".join(["%s"] * n),
    "pyformat": lambda n: ", ".join(["%s"] * n),
}


def _sqlite_chunks(batch: list[Entry]) -> Iterator[tuple[str, tuple[object, ...]]]:
    """The batch as (statement, parameters): chunks of a power of two rows, largest first."""
    start = 0
    while start < len(batch):
        rows = 1 << (min(len(batch) - start, _SQLITE_CHUNK).bit_length() - 1)
        yield _SQLITE_INSERTS[rows], tuple(chain.from_iterable(batch[start : start + rows]))
        start += rows


class RequestLog:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        level: Level,
        flush_seconds: float,
        buffer: int,
        retention_days: int,
        redactor: Redactor,
        body_limit: int = 16_384,
    ) -> None:
        self.level = level
        self.body_limit = body_limit  # bytes of each body kept (REQUEST_LOG=full)
        self._sessions = sessions
        self._flush_seconds = flush_seconds
        self._retention = timedelta(days=retention_days)
        self._redactor = redactor
        self._pending: deque[Entry] = deque(maxlen=buffer)
        self._insert: str | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0
        self._backoff = Backoff("request log: database")
        self.written = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.level != "off"

    @property
    def bodies(self) -> bool:
        """Whether request and answer bodies are kept (REQUEST_LOG=full)."""
        return self.level == "full"

    def add(self, entry: Entry) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1  # the deque lets the oldest go
        self._pending.append(entry)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="request-log-flush")

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
            if time.monotonic() - self._pruned_at >= PRUNE_SECONDS:
                self._pruned_at = time.monotonic()
                await self.prune()

    async def flush(self) -> bool:
        """Write what is pending; False (and kept for the next try) when the database refused it."""
        async with self._lock:
            if not self._pending:
                return True
            batch = list(self._pending)
            self._pending.clear()
            try:
                async with self._sessions() as session, session.begin():
                    connection = await session.connection()
                    if connection.dialect.name == "sqlite":
                        if self.bodies:
                            batch = await asyncio.to_thread(self._redacted, batch)
                        for statement, parameters in _sqlite_chunks(batch):
                            await connection.exec_driver_sql(statement, parameters)
                    else:
                        rows = await asyncio.to_thread(self._rows, batch)
                        await connection.exec_driver_sql(self._statement(connection.dialect.paramstyle), rows)
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                self._backoff.failed(exc, "request log entries kept in memory until the next flush")
                self._keep(batch)
                return False
            self.written += len(batch)
            return True

    def _keep(self, batch: list[Entry]) -> None:
        """Put a batch that was not written back in front of what came since, the oldest going if need be."""
        maxlen = self._pending.maxlen or len(batch)
        kept = [*batch, *self._pending]
        overflow = max(0, len(kept) - maxlen)
        self.dropped += overflow
        self._pending = deque(kept[overflow:], maxlen=maxlen)

    def _statement(self, paramstyle: str) -> str:
        if self._insert is None:
            self._insert = (
                f"INSERT INTO request_log ({_COLUMNS}) VALUES ({_PLACEHOLDERS[paramstyle](len(Entry._fields))})"
            )
        return self._insert

    def _rows(self, batch: list[Entry]) -> list[tuple[object, ...]]:
        """The rows as asyncpg takes them: times as datetimes, bodies redacted."""
        if self.bodies:
            batch = self._redacted(batch)
        return [(datetime.fromtimestamp(entry.at, UTC), *entry[1:]) for entry in batch]

    def _redacted(self, batch: list[Entry]) -> list[Entry]:
        redact = self._redact
        return [
            entry._replace(request_body=redact(entry.request_body), response_body=redact(entry.response_body))
            for entry in batch
        ]

    def _redact(self, body: str | None) -> str | None:
        return None if body is None else self._redactor.redact(body)

    async def prune(self) -> int:
        """Delete the rows older than the retention period; how many went."""
        cutoff = datetime.now(UTC) - self._retention
        try:
            async with self._sessions() as session, session.begin():
                result = await session.execute(delete(RequestLogRow).where(RequestLogRow.at < cutoff))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            logger.warning("request log: old rows not pruned ({!r}); tried again in an hour", exc)
            return 0
        return int(getattr(result, "rowcount", 0) or 0)

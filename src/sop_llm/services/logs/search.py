"""Searching the request log: newest first, filtered by caller, model, status and time, a page at a time.

Pages are cut by a cursor (the last row's time and id), not an offset, so a page deep in a large log costs what
the first does: each filter has an index that starts with it and ends with the time (model.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.errors import BadRequestError
from sop_llm.services.logs.model import RequestLogRow

STATUS = re.compile(r"^(?:[1-5]\d\d|[1-5]xx|error)$")
_CURSOR = re.compile(r"^(\d{1,17})-(\d{1,18})$")  # the last row's time in microseconds, and its id (< 2**63)


@dataclass(frozen=True, slots=True)
class LogFilter:
    subject: str | None = None
    model: str | None = None
    status: str | None = None  # a code (`429`), a class (`4xx`) or `error` (any ≥ 400)
    since: datetime | None = None
    until: datetime | None = None
    before: str | None = None  # the cursor of the previous page
    limit: int = 50


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _status(query: Select[RequestLogRow], status: str) -> Select[RequestLogRow]:
    if not STATUS.match(status):
        raise BadRequestError("`status` is a code (429), a class (4xx) or `error`", param="status")
    if status == "error":
        return query.where(RequestLogRow.status >= 400)
    if status.endswith("xx"):
        low = int(status[0]) * 100
        return query.where(RequestLogRow.status >= low, RequestLogRow.status < low + 100)
    return query.where(RequestLogRow.status == int(status))


def _after_cursor(query: Select[RequestLogRow], cursor: str) -> Select[RequestLogRow]:
    matched = _CURSOR.match(cursor)
    if matched is None:
        raise BadRequestError("`before` is not a cursor this service gave out; pass a page's `next`", param="before")
    micros, last_id = int(matched[1]), int(matched[2])
    at = datetime.fromtimestamp(micros / 1_000_000, UTC)
    # `at <= t` bounds the index scan; the rest skips the rows of that same instant already shown.
    return query.where(RequestLogRow.at <= at, or_(RequestLogRow.at < at, and_(RequestLogRow.id < last_id)))


def cursor_of(row: RequestLogRow) -> str:
    at = _utc(row.at)
    micros = int(at.timestamp()) * 1_000_000 + at.microsecond
    return f"{micros}-{row.id}"


def log_view(row: RequestLogRow, bodies: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "at": _utc(row.at).isoformat(),
        "subject": row.subject,
        "surface": row.surface,
        "method": row.method,
        "route": row.route,
        "model": row.model,
        "served_by": row.served_by,
        "status": row.status,
        "error_code": row.error_code,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.prompt_tokens + row.completion_tokens,
        "latency_ms": round(row.latency_ms, 3),
        "first_token_ms": None if row.first_token_ms is None else round(row.first_token_ms, 3),
        "trace_id": row.trace_id,
    }
    if bodies:
        view["request_body"] = row.request_body
        view["response_body"] = row.response_body
    return view


class LogSearch:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def search(self, wanted: LogFilter) -> tuple[list[dict[str, Any]], str | None]:
        """A page of rows, newest first, and the cursor of the next page (None on the last)."""
        query = select(RequestLogRow)
        if wanted.subject is not None:
            query = query.where(RequestLogRow.subject == wanted.subject)
        if wanted.model is not None:
            query = query.where(RequestLogRow.model == wanted.model)
        if wanted.status is not None:
            query = _status(query, wanted.status)
        if wanted.since is not None:
            query = query.where(RequestLogRow.at >= _utc(wanted.since))
        if wanted.until is not None:
            query = query.where(RequestLogRow.at <= _utc(wanted.until))
        if wanted.before is not None:
            query = _after_cursor(query, wanted.before)
        query = query.order_by(RequestLogRow.at.desc(), RequestLogRow.id.desc()).limit(wanted.limit + 1)
        async with self._sessions() as session:
            rows = list(await session.scalars(query))
        more = len(rows) > wanted.limit
        rows = rows[: wanted.limit]
        return [log_view(row) for row in rows], cursor_of(rows[-1]) if more else None

    async def get(self, row_id: int) -> RequestLogRow | None:
        async with self._sessions() as session:
            return await session.get(RequestLogRow, row_id)

"""Batch storage. Status changes are conditional UPDATEs (from the statuses a change may leave), so any number of
API processes and workers can move batches without two of them doing the same step; a line's outcome is written
only while it has none."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.database import transaction
from sop_llm.infra.errors import BadRequestError, NotFoundError
from sop_llm.services.batches.input import InputLine
from sop_llm.services.batches.model import BatchLineRow, BatchRow, BatchStatus

INSERT_PAGE = 1000
READ_PAGE = 500


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What running one line gave: the endpoint's answer (status and JSON body) or, when no answer could be had, an
    error."""

    seq: int
    status_code: int | None
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Progress:
    finished: int = 0
    completed: int = 0  # finished with a 2xx answer
    failed: int = 0


class BatchRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    def _session(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions, "the batch database")

    async def create(self, row: BatchRow, lines: list[InputLine]) -> None:
        """The batch and its lines, in one transaction; lines that cannot run are stored finished, with their error."""
        stamp = now()
        values = [
            {
                "batch_id": row.id,
                "seq": seq,
                "line": item.line,
                "custom_id": item.custom_id,
                "body": item.body,
                "error": item.error,
                "finished_at": None if item.error is None else stamp,
            }
            for seq, item in enumerate(lines)
        ]
        async with self._session() as session:
            session.add(row)
            await session.flush()
            for start in range(0, len(values), INSERT_PAGE):
                await session.execute(insert(BatchLineRow), values[start : start + INSERT_PAGE])

    async def get(self, batch_id: str) -> BatchRow:
        async with self._session() as session:
            row = await session.get(BatchRow, batch_id)
        if row is None:
            raise NotFoundError(f"no batch with id '{batch_id}'", param="batch_id")
        return row

    async def search(self, owner: str | None, limit: int, after: str | None) -> tuple[list[BatchRow], bool]:
        """A page of the owner's batches, newest first, after the batch `after`; and whether more follow."""
        query = select(BatchRow).where(BatchRow.owner.is_(None) if owner is None else BatchRow.owner == owner)
        async with self._session() as session:
            if after is not None:
                cursor = await session.get(BatchRow, after)
                if cursor is None or cursor.owner != owner:
                    raise BadRequestError(f"after: no batch with id '{after}'", param="after")
                query = query.where(
                    (BatchRow.created_at < cursor.created_at)
                    | ((BatchRow.created_at == cursor.created_at) & (BatchRow.id < cursor.id))
                )
            rows = list(
                await session.scalars(query.order_by(BatchRow.created_at.desc(), BatchRow.id.desc()).limit(limit + 1))
            )
        return rows[:limit], len(rows) > limit

    async def in_states(self, statuses: Iterable[BatchStatus]) -> list[BatchRow]:
        async with self._session() as session:
            return list(await session.scalars(select(BatchRow).where(BatchRow.status.in_(list(statuses)))))

    async def progress(self, batch_ids: list[str]) -> dict[str, Progress]:
        if not batch_ids:
            return {}
        ok = case(((BatchLineRow.status_code >= 200) & (BatchLineRow.status_code < 300), 1), else_=0)
        query = (
            select(BatchLineRow.batch_id, func.count(), func.sum(ok))
            .where(BatchLineRow.batch_id.in_(batch_ids), BatchLineRow.finished_at.is_not(None))
            .group_by(BatchLineRow.batch_id)
        )
        async with self._session() as session:
            rows = await session.execute(query)
            found = {batch_id: Progress(int(n), int(good or 0), int(n) - int(good or 0)) for batch_id, n, good in rows}
        return {batch_id: found.get(batch_id, Progress()) for batch_id in batch_ids}

    async def move(
        self,
        batch_id: str,
        leaving: Iterable[BatchStatus],
        to: BatchStatus,
        finalizing_since: datetime | None = None,
        **values: Any,
    ) -> bool:
        """Change the status (and set `values`) only if the batch is in one of `leaving` (and, with
        `finalizing_since`, was claimed for finalizing at that instant: still by the same claim); False if not."""
        where = [BatchRow.id == batch_id, BatchRow.status.in_(list(leaving))]
        if finalizing_since is not None:
            where.append(BatchRow.finalizing_at == finalizing_since)
        async with self._session() as session:
            outcome = await session.execute(update(BatchRow).where(*where).values(status=to, **values))
            return bool(outcome.rowcount)  # type: ignore[attr-defined]

    async def open_lines(self, batch_id: str, first: int, last: int) -> list[BatchLineRow]:
        """Lines `first`..`last` (by seq) that still have no outcome."""
        async with self._session() as session:
            rows = await session.scalars(
                select(BatchLineRow)
                .where(
                    BatchLineRow.batch_id == batch_id,
                    BatchLineRow.seq.between(first, last),
                    BatchLineRow.finished_at.is_(None),
                )
                .order_by(BatchLineRow.seq)
            )
            return list(rows)

    async def record(self, batch_id: str, outcomes: list[Outcome]) -> None:
        """Write each line's outcome, unless it already has one (a chunk run again after its worker died)."""
        if not outcomes:
            return
        stamp = now()
        statement = (
            update(BatchLineRow)
            .where(
                BatchLineRow.batch_id == bindparam("b_id"),
                BatchLineRow.seq == bindparam("b_seq"),
                BatchLineRow.finished_at.is_(None),
            )
            .values(
                status_code=bindparam("b_status"),
                response=bindparam("b_response"),
                error=bindparam("b_error"),
                request_id=bindparam("b_request"),
                finished_at=stamp,
            )
        )
        params = [
            {
                "b_id": batch_id,
                "b_seq": o.seq,
                "b_status": o.status_code,
                "b_response": o.response,
                "b_error": o.error,
                "b_request": o.request_id,
            }
            for o in outcomes
        ]
        async with self._session() as session:
            connection = await session.connection()  # executemany on the Core connection, not the ORM's bulk path
            await connection.execute(statement, params)

    async def close_open_lines(
        self, batch_id: str, error: dict[str, Any], first: int = 0, last: int | None = None
    ) -> int:
        """Give every line (of seq `first`..`last`) still without an outcome `error`: the batch expired, or the
        work on them failed for good."""
        where = [BatchLineRow.batch_id == batch_id, BatchLineRow.finished_at.is_(None), BatchLineRow.seq >= first]
        if last is not None:
            where.append(BatchLineRow.seq <= last)
        async with self._session() as session:
            outcome = await session.execute(update(BatchLineRow).where(*where).values(error=error, finished_at=now()))
            return int(outcome.rowcount)  # type: ignore[attr-defined]

    async def open_chunks(self, batch_id: str, chunk_lines: int) -> list[int]:
        """The chunks (by number) that still have lines without an outcome, in order."""
        async with self._session() as session:
            seqs = await session.scalars(
                select(BatchLineRow.seq).where(BatchLineRow.batch_id == batch_id, BatchLineRow.finished_at.is_(None))
            )
            return sorted({seq // chunk_lines for seq in seqs})

    async def forget_lines(self, batch_id: str) -> None:
        """Delete an ended batch's lines (their outcomes are in its result files), a page at a time."""
        while True:
            async with self._session() as session:
                page = select(BatchLineRow.seq).where(BatchLineRow.batch_id == batch_id).limit(INSERT_PAGE)
                gone = await session.execute(
                    delete(BatchLineRow).where(BatchLineRow.batch_id == batch_id, BatchLineRow.seq.in_(page))
                )
            if not gone.rowcount:  # type: ignore[attr-defined]
                return

    async def line_pages(self, batch_id: str) -> AsyncIterator[list[BatchLineRow]]:
        """Every line of the batch in order, a page at a time."""
        start = 0
        while True:
            async with self._session() as session:
                page = list(
                    await session.scalars(
                        select(BatchLineRow)
                        .where(BatchLineRow.batch_id == batch_id, BatchLineRow.seq >= start)
                        .order_by(BatchLineRow.seq)
                        .limit(READ_PAGE)
                    )
                )
            if page:
                yield page
            if len(page) < READ_PAGE:
                return
            start = page[-1].seq + 1

    async def overview(self, active_listed: int = 10) -> dict[str, Any]:
        """For monitoring: batches per status, and the progress of the oldest unfinished ones."""
        async with self._session() as session:
            counts = dict(
                (await session.execute(select(BatchRow.status, func.count()).group_by(BatchRow.status))).all()
            )
            active = list(
                await session.scalars(
                    select(BatchRow)
                    .where(
                        BatchRow.status.in_([BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING])
                    )
                    .order_by(BatchRow.created_at)
                    .limit(active_listed)
                )
            )
        progress = await self.progress([row.id for row in active])
        return {
            "by_status": {str(status): int(n) for status, n in counts.items()},
            "active": [
                {
                    "id": row.id,
                    "endpoint": row.endpoint,
                    "status": row.status,
                    "total": row.total,
                    "completed": progress[row.id].completed,
                    "failed": progress[row.id].failed,
                }
                for row in active
            ],
        }

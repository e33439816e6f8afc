"""Task storage. Every state change is one conditional UPDATE, so two processes can never both move a task:
claim (pending → processing, with a lease and attempt + 1), lease renewal, complete/fail (guarded by the lease owner),
cancel, and re-queueing of tasks whose lease expired. The same goes for the two outboxes kept in the table: task ids
still to be handed to the broker (`dispatched_at`) and webhooks still to be delivered (`webhook_due_at`).
Database failures become ServiceUnavailableError (503)."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.database import transaction
from sop_llm.infra.errors import NotFoundError
from sop_llm.services.tasks.model import TaskRow, TaskStatus

# A task that may still run.
LIVE = (TaskStatus.PENDING, TaskStatus.PROCESSING)


def now() -> datetime:
    return datetime.now(UTC)


def _webhook_due(at: datetime) -> Any:
    """`webhook_due_at` for a task that just ended: due at `at` when it has a webhook, else NULL."""
    return case((TaskRow.webhook_url.is_not(None), at), else_=None)


class TaskRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], webhook_grace_s: float = 30.0) -> None:
        """`webhook_grace_s`: how long the process that finished a task has to deliver its webhook before a
        sweeper takes over (the lease time: a finisher silent that long is presumed dead)."""
        self._sessions = sessions
        self._webhook_grace_s = webhook_grace_s

    def _session(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._sessions, "the task database")

    async def create(
        self,
        kind: str,
        payload: dict[str, Any],
        max_attempts: int,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        dispatched: bool = False,
        owner: str | None = None,
    ) -> tuple[TaskRow, bool]:
        """(task, created): with an idempotency key already used, the existing task and False. `dispatched` marks
        the task as handed to the broker by the caller (which publishes it right after)."""
        if idempotency_key is not None:
            existing = await self.find_by_key(idempotency_key)
            if existing is not None:
                return existing, False
        stamp = now()
        row = TaskRow(
            id=str(uuid.uuid4()),
            kind=kind,
            payload=payload,
            status=TaskStatus.PENDING,
            attempts=0,
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
            available_at=stamp,
            created_at=stamp,
            updated_at=stamp,
            dispatched_at=stamp if dispatched else None,
            webhook_attempts=0,
            owner=owner,
        )
        try:
            async with self._session() as session:
                session.add(row)
        except IntegrityError:  # the same key, created concurrently by another request
            existing = await self.find_by_key(idempotency_key or "")
            if existing is None:
                raise
            return existing, False
        return row, True

    async def find_by_key(self, key: str) -> TaskRow | None:
        async with self._session() as session:
            found: TaskRow | None = await session.scalar(select(TaskRow).where(TaskRow.idempotency_key == key))
            return found

    async def get(self, task_id: str) -> TaskRow:
        async with self._session() as session:
            row = await session.get(TaskRow, task_id)
        if row is None:
            raise NotFoundError(f"no task with id '{task_id}'", param="task_id")
        return row

    async def search(
        self, status: str | None, kind: str | None, limit: int, offset: int, owner: str | None = None
    ) -> tuple[list[TaskRow], int]:
        """A page of tasks, newest first; `owner` limits it to one caller's tasks."""
        query = select(TaskRow)
        if owner is not None:
            query = query.where(TaskRow.owner == owner)
        if status:
            query = query.where(TaskRow.status == status)
        if kind:
            query = query.where(TaskRow.kind == kind)
        async with self._session() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = await session.scalars(query.order_by(TaskRow.created_at.desc()).limit(limit).offset(offset))
            return list(rows), int(total)

    async def counts(self) -> dict[str, int]:
        """How many tasks are in each status."""
        async with self._session() as session:
            rows = await session.execute(select(TaskRow.status, func.count()).group_by(TaskRow.status))
            return {str(status): int(count) for status, count in rows}

    async def claimable(self, limit: int) -> list[str]:
        async with self._session() as session:
            ids = await session.scalars(
                select(TaskRow.id)
                .where(TaskRow.status == TaskStatus.PENDING, TaskRow.available_at <= now())
                .order_by(TaskRow.created_at)
                .limit(limit)
            )
            return list(ids)

    async def claim(self, task_id: str, owner: str, lease_s: float) -> bool:
        stamp = now()
        async with self._session() as session:
            result = await session.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.status == TaskStatus.PENDING, TaskRow.available_at <= stamp)
                .values(
                    status=TaskStatus.PROCESSING,
                    lease_owner=owner,
                    lease_expires_at=stamp + timedelta(seconds=lease_s),
                    attempts=TaskRow.attempts + 1,
                    started_at=stamp,
                    updated_at=stamp,
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def renew(self, task_ids: list[str], owner: str, lease_s: float) -> set[str]:
        """Extend the lease of the tasks this owner still holds and return their ids; a task missing from the
        answer was cancelled, or re-queued after its lease expired, and its runner must stop it."""
        if not task_ids:
            return set()
        async with self._session() as session:
            held = await session.scalars(
                update(TaskRow)
                .where(TaskRow.id.in_(task_ids), TaskRow.status == TaskStatus.PROCESSING, TaskRow.lease_owner == owner)
                .values(lease_expires_at=now() + timedelta(seconds=lease_s))
                .returning(TaskRow.id)
            )
            return set(held)

    async def finish(self, task_id: str, owner: str, status: TaskStatus, result: Any = None, error: Any = None) -> bool:
        """Complete, fail or cancel a task this owner holds; False when the lease was lost (someone else has it).
        The owner stays on the row as the runner that finished it."""
        stamp = now()
        return await self._update_held(
            task_id,
            owner,
            status=status,
            result=result,
            error=error,
            finished_at=stamp,
            updated_at=stamp,
            lease_expires_at=None,
            # The finisher delivers the webhook at once (attempt 1); a sweeper retries after the grace.
            webhook_due_at=_webhook_due(stamp + timedelta(seconds=self._webhook_grace_s)),
            webhook_attempts=case((TaskRow.webhook_url.is_not(None), 1), else_=0),
        )

    async def retry_later(self, task_id: str, owner: str, error: Any, delay_s: float) -> bool:
        stamp = now()
        return await self._update_held(
            task_id,
            owner,
            status=TaskStatus.PENDING,
            error=error,
            lease_owner=None,
            lease_expires_at=None,
            available_at=stamp + timedelta(seconds=delay_s),
            updated_at=stamp,
            dispatched_at=None,
        )

    async def _update_held(self, task_id: str, owner: str, **values: Any) -> bool:
        """Change a task only while `owner` holds it (processing under its lease); False when it does not."""
        async with self._session() as session:
            outcome = await session.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.status == TaskStatus.PROCESSING, TaskRow.lease_owner == owner)
                .values(**values)
            )
            return bool(outcome.rowcount)  # type: ignore[attr-defined]

    async def cancel(self, task_id: str) -> TaskRow:
        """Pending tasks are cancelled at once; a processing one is marked cancelled and its runner stops it."""
        stamp = now()
        async with self._session() as session:
            await session.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.status.in_([TaskStatus.PENDING, TaskStatus.PROCESSING]))
                .values(status=TaskStatus.CANCELLED, finished_at=stamp, updated_at=stamp, lease_owner=None)
            )
        return await self.get(task_id)

    async def requeue_expired(self) -> int:
        """Tasks whose worker died (lease expired) go back to pending; attempts already counted them."""
        stamp = now()
        async with self._session() as session:
            result = await session.execute(
                update(TaskRow)
                .where(TaskRow.status == TaskStatus.PROCESSING, TaskRow.lease_expires_at < stamp)
                .values(
                    status=TaskStatus.PENDING,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=stamp,
                    dispatched_at=None,
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def fail_exhausted(self) -> int:
        """Pending tasks that already used every attempt end as failed (a worker died on their last one)."""
        stamp = now()
        async with self._session() as session:
            result = await session.execute(
                update(TaskRow)
                .where(TaskRow.status == TaskStatus.PENDING, TaskRow.attempts >= TaskRow.max_attempts)
                .values(
                    status=TaskStatus.FAILED, finished_at=stamp, updated_at=stamp, webhook_due_at=_webhook_due(stamp)
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def take_undispatched(self, limit: int, stale_s: float) -> list[str]:
        """Mark as dispatched, and return, pending tasks never handed to the broker (it was unreachable, or they
        were re-queued) or handed over more than `stale_s` ago without being claimed (the message was lost).
        One conditional UPDATE, so concurrent sweepers never hand over the same task twice in one round."""
        stamp = now()
        owed = (
            TaskRow.status == TaskStatus.PENDING,
            TaskRow.available_at <= stamp,
            or_(TaskRow.dispatched_at.is_(None), TaskRow.dispatched_at < stamp - timedelta(seconds=stale_s)),
        )
        oldest = select(TaskRow.id).where(*owed).order_by(TaskRow.created_at).limit(limit)
        async with self._session() as session:
            taken = await session.scalars(
                update(TaskRow)
                .where(TaskRow.id.in_(oldest.scalar_subquery()), *owed)
                .values(dispatched_at=stamp)
                .returning(TaskRow.id)
            )
            return list(taken)

    async def undispatch(self, task_ids: list[str]) -> None:
        """The broker did not take these: leave them for the next sweep."""
        async with self._session() as session:
            await session.execute(
                update(TaskRow)
                .where(TaskRow.id.in_(task_ids), TaskRow.status == TaskStatus.PENDING)
                .values(dispatched_at=None)
            )

    async def take_due_webhooks(self, limit: int, max_attempts: int) -> list[TaskRow]:
        """Claim webhooks that are due (their finisher died, or a delivery failed): each claim counts an attempt
        and moves the due time on (doubling from the grace time), so no other sweeper sends it meanwhile."""
        stamp = now()
        async with self._session() as session:
            rows = list(
                await session.scalars(
                    select(TaskRow)
                    .where(TaskRow.webhook_due_at <= stamp, TaskRow.webhook_attempts < max_attempts)
                    .order_by(TaskRow.webhook_due_at)
                    .limit(limit)
                )
            )
        taken = []
        for row in rows:
            async with self._session() as session:
                outcome = await session.execute(
                    update(TaskRow)
                    .where(TaskRow.id == row.id, TaskRow.webhook_attempts == row.webhook_attempts)
                    .values(
                        webhook_attempts=row.webhook_attempts + 1,
                        webhook_due_at=stamp + timedelta(seconds=self._webhook_grace_s * 2**row.webhook_attempts),
                    )
                )
            if outcome.rowcount:  # type: ignore[attr-defined]
                taken.append(row)
        return taken

    async def webhook_attempted(self, task_id: str, delivered: bool, error: str | None, final: bool) -> None:
        """Record a delivery attempt: delivered, failed for good (no longer due), or failed for now (the due time
        the claim set stands, until the attempts run out)."""
        values: dict[str, Any] = {"webhook_error": error}
        if delivered:
            values.update(webhook_due_at=None, webhook_sent_at=now())
        elif final:
            values.update(webhook_due_at=None)
        async with self._session() as session:
            await session.execute(update(TaskRow).where(TaskRow.id == task_id).values(**values))

    async def cancel_keyed(self, key_prefix: str) -> list[str]:
        """Cancel every pending or processing task whose idempotency key starts with `key_prefix` (the chunks of
        one batch); the ids of those that were processing, for their runners to stop."""
        stamp = now()
        live = (TaskRow.idempotency_key.startswith(key_prefix, autoescape=True), TaskRow.status.in_(LIVE))
        async with self._session() as session:
            running = list(
                await session.scalars(select(TaskRow.id).where(*live, TaskRow.status == TaskStatus.PROCESSING))
            )
            await session.execute(
                update(TaskRow)
                .where(*live)
                .values(status=TaskStatus.CANCELLED, finished_at=stamp, updated_at=stamp, lease_owner=None)
            )
        return running

    async def count_keyed(self, key_prefix: str, statuses: tuple[TaskStatus, ...] = ()) -> int:
        """How many tasks whose idempotency key starts with `key_prefix` are in `statuses` (default: pending or
        processing)."""
        async with self._session() as session:
            found = await session.scalar(
                select(func.count()).where(
                    TaskRow.idempotency_key.startswith(key_prefix, autoescape=True),
                    TaskRow.status.in_(statuses or LIVE),
                )
            )
        return int(found or 0)

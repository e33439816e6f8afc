"""TaskService: accept, look up, list and cancel tasks. Work is done by a runner: in this process when there is no
broker, else by `sop-llm worker` processes that the broker hands task ids to."""

from __future__ import annotations

import contextlib
from typing import Any

from sop_llm.infra.errors import AppError, NotFoundError
from sop_llm.infra.settings import Settings
from sop_llm.services.auth.principal import Principal
from sop_llm.services.tasks.broker import BrokerDispatch
from sop_llm.services.tasks.model import TaskRow
from sop_llm.services.tasks.repository import TaskRepository
from sop_llm.services.tasks.runner import TaskRunner
from sop_llm.services.tasks.webhook_guard import check_webhook_url


class TaskService:
    def __init__(
        self,
        settings: Settings,
        repository: TaskRepository,
        runner: TaskRunner | None,
        dispatch: BrokerDispatch | None,
    ) -> None:
        self._settings = settings
        self.repository = repository
        self.runner = runner
        self.dispatch = dispatch

    async def submit(
        self,
        kind: str,
        payload: dict[str, Any],
        idempotency_key: str | None,
        webhook_url: str | None,
        max_attempts: int | None,
        principal: Principal,
    ) -> tuple[TaskRow, bool]:
        """Store the task (the database is the truth), then hand its id to the broker or the local runner. When the
        broker cannot take it, the task stays accepted and a worker's sweeper dispatches it later."""
        if webhook_url is not None:
            await check_webhook_url(webhook_url, self._settings.webhook_allowed_hosts)
        row, created = await self.repository.create(
            kind,
            payload,
            max_attempts or self._settings.tasks_max_attempts,
            idempotency_key,
            webhook_url,
            dispatched=self.dispatch is not None,
            owner=principal.subject,
        )
        if created and self.dispatch is not None:
            if not await self.dispatch.publish([row.id]):
                with contextlib.suppress(AppError):  # else it is handed over once the dispatch goes stale
                    await self.repository.undispatch([row.id])
        elif created and self.runner is not None:
            self.runner.notify()
        return row, created

    async def get(self, task_id: str, principal: Principal) -> TaskRow:
        """A user sees only their own tasks (another's answers 404, as if it did not exist); an admin sees all."""
        row = await self.repository.get(task_id)
        if not principal.admin and row.owner != principal.subject:
            raise NotFoundError(f"no task with id '{task_id}'", param="task_id")
        return row

    async def search(
        self, status: str | None, kind: str | None, limit: int, offset: int, principal: Principal
    ) -> tuple[list[TaskRow], int]:
        owner = None if principal.admin else principal.subject
        return await self.repository.search(status, kind, limit, offset, owner=owner)

    async def cancel(self, task_id: str, principal: Principal) -> TaskRow:
        """A running generation stops within a token here, or within a second in whichever worker runs it."""
        await self.get(task_id, principal)
        row = await self.repository.cancel(task_id)
        if self.runner is not None:
            self.runner.cancel(task_id)
        return row

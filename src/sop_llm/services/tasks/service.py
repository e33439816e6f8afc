"""TaskService: accept, look up, list and cancel tasks; the runner does the work."""

from __future__ import annotations

from typing import Any

from sop_llm.infra.settings import Settings
from sop_llm.services.tasks.model import TaskRow
from sop_llm.services.tasks.repository import TaskRepository
from sop_llm.services.tasks.runner import TaskRunner


class TaskService:
    def __init__(self, settings: Settings, repository: TaskRepository, runner: TaskRunner) -> None:
        self._settings = settings
        self.repository = repository
        self.runner = runner

    async def submit(
        self,
        kind: str,
        payload: dict[str, Any],
        idempotency_key: str | None,
        webhook_url: str | None,
        max_attempts: int | None,
    ) -> tuple[TaskRow, bool]:
        row, created = await self.repository.create(
            kind, payload, max_attempts or self._settings.tasks_max_attempts, idempotency_key, webhook_url
        )
        if created:
            self.runner.notify()
        return row, created

    async def get(self, task_id: str) -> TaskRow:
        return await self.repository.get(task_id)

    async def search(self, status: str | None, kind: str | None, limit: int, offset: int) -> tuple[list[TaskRow], int]:
        return await self.repository.search(status, kind, limit, offset)

    async def cancel(self, task_id: str) -> TaskRow:
        row = await self.repository.cancel(task_id)
        self.runner.cancel(task_id)  # a running local generation stops within a token
        return row

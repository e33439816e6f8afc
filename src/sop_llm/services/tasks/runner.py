"""The in-process task runner: claims pending tasks from the database, runs them (up to TASKS_CONCURRENCY at once)
with a heartbeat that renews the lease, and records the outcome with updates guarded by that lease. A sweeper
re-queues tasks whose lease expired (their runner died) and fails those out of attempts. Retryable failures are
retried with backoff until `max_attempts`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from loguru import logger

from sop_llm.infra.errors import AppError
from sop_llm.infra.settings import Settings
from sop_llm.services.tasks.jobs import JOBS, JobContext
from sop_llm.services.tasks.model import TaskRow, TaskStatus
from sop_llm.services.tasks.repository import TaskRepository


def runner_id() -> str:
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class TaskRunner:
    def __init__(self, settings: Settings, repository: TaskRepository, context: JobContext) -> None:
        self._settings = settings
        self._repo = repository
        self._context = context
        self.owner = runner_id()
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._wakeup = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._ready: Callable[[], bool] = lambda: True

    def start(self, ready: Callable[[], bool] = lambda: True) -> None:
        """Start claiming once `ready()` says the startup models are loaded (a job run earlier would only fail
        with "model still loading" and spend one of its attempts)."""
        self._ready = ready
        self._loops = [asyncio.create_task(self._claim_loop()), asyncio.create_task(self._sweep_loop())]

    def notify(self) -> None:
        self._wakeup.set()

    async def aclose(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        running = list(self._running.items())
        for _, job in running:
            job.cancel()
        await asyncio.gather(*(job for _, job in running), return_exceptions=True)
        for task_id, _ in running:  # hand them back at once rather than after the lease expires
            with contextlib.suppress(AppError):  # else the next runner's sweeper re-queues them later
                await self._repo.retry_later(task_id, self.owner, None, 0)

    def cancel(self, task_id: str) -> bool:
        job = self._running.get(task_id)
        if job is None:
            return False
        job.cancel()
        return True

    async def _claim_loop(self) -> None:
        while True:
            try:
                free = self._settings.tasks_concurrency - len(self._running)
                if free > 0 and self._ready():
                    for task_id in await self._repo.claimable(free):
                        if await self._repo.claim(task_id, self.owner, self._settings.tasks_lease_seconds):
                            self._running[task_id] = asyncio.create_task(self._run(task_id), name=f"task-{task_id}")
            except AppError as exc:
                logger.warning("task runner cannot reach the database: {}", exc.message)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._settings.tasks_poll_interval)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.tasks_lease_seconds / 2)
            try:
                requeued = await self._repo.requeue_expired()
                await self._repo.fail_exhausted()
                if requeued:
                    logger.info("re-queued {} task(s) whose lease expired", requeued)
                    self.notify()
            except AppError as exc:
                logger.warning("task sweeper cannot reach the database: {}", exc.message)

    async def _run(self, task_id: str) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(task_id))
        try:
            row = await self._repo.get(task_id)
            job = JOBS[row.kind]
            try:
                result = await job(row.payload, self._context)
            except asyncio.CancelledError:
                return  # cancelled through the API (status already set) or shutting down (handed back)
            except AppError as exc:
                await self._failed(row, exc.retryable, {"code": exc.error_code, "message": exc.message})
                return
            except Exception as exc:
                logger.opt(exception=exc).error("task {} crashed", task_id)
                await self._failed(row, False, {"code": "internal_error", "message": type(exc).__name__})
                return
            if await self._repo.finish(task_id, self.owner, TaskStatus.COMPLETED, result=result):
                await self._notify_webhook(task_id)
        except AppError as exc:
            logger.warning("task {}: {}", task_id, exc.message)
        finally:
            heartbeat.cancel()
            self._running.pop(task_id, None)
            self.notify()

    async def _failed(self, row: TaskRow, retryable: bool, error: dict[str, Any]) -> None:
        if retryable and row.attempts < row.max_attempts:
            delay = min(30.0, 0.5 * 2 ** (row.attempts - 1))
            await self._repo.retry_later(row.id, self.owner, error, delay)
        else:
            await self._repo.finish(row.id, self.owner, TaskStatus.FAILED, error=error)
            await self._notify_webhook(row.id)

    async def _heartbeat(self, task_id: str) -> None:
        while True:
            await asyncio.sleep(self._settings.tasks_lease_seconds / 3)
            try:
                await self._repo.heartbeat(task_id, self.owner, self._settings.tasks_lease_seconds)
            except AppError as exc:
                logger.warning("task {}: heartbeat failed: {}", task_id, exc.message)

    async def _notify_webhook(self, task_id: str) -> None:
        row = await self._repo.get(task_id)
        if not row.webhook_url:
            return
        import aiohttp

        from sop_llm.services.tasks.views import task_view

        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await session.post(row.webhook_url, json=task_view(row))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.warning("task {}: webhook {} failed: {!r}", task_id, row.webhook_url, exc)

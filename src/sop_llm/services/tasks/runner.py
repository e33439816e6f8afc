"""The task runner: runs claimed tasks (up to TASKS_CONCURRENCY at once), renews their leases, and records each
outcome with updates guarded by the lease. Tasks reach it one of two ways: on one machine it polls the database for
pending tasks; as a `sop-llm worker` the broker hands it task ids (`take`). Either way a sweeper re-queues tasks whose
lease expired (their runner died), fails those out of attempts, hands undispatched tasks to the broker again and
retries webhooks that were not delivered. Retryable failures are retried with backoff until `max_attempts`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from loguru import logger

from sop_llm.infra.errors import AppError
from sop_llm.infra.settings import Settings
from sop_llm.providers.types import WorkClass
from sop_llm.services import priority
from sop_llm.services.tasks.broker import BrokerDispatch
from sop_llm.services.tasks.jobs import Job
from sop_llm.services.tasks.model import TaskRow, TaskStatus
from sop_llm.services.tasks.repository import TaskRepository
from sop_llm.services.usage.meter import UsageMeter
from sop_llm.services.usage.record import opened

WEBHOOK_MAX_ATTEMPTS = 6
SWEEP_BATCH = 500
# How often running tasks are checked for cancellation (their leases are renewed on the same round trip).
WATCH_INTERVAL = 1.0


def runner_id() -> str:
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class TaskRunner:
    def __init__(
        self,
        settings: Settings,
        repository: TaskRepository,
        jobs: Mapping[str, Job],
        dispatch: BrokerDispatch | None = None,
        usage: UsageMeter | None = None,
    ) -> None:
        """`jobs`: what runs a task, by its kind (built by the container). `usage`: where each run's model, tokens and
        latency are tallied for the task's owner, as a request of theirs would be (None: not counted)."""
        self._settings = settings
        self._repo = repository
        self._jobs = jobs
        self._dispatch = dispatch
        self._usage = usage
        self.owner = runner_id()
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._wakeup = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._ready: Callable[[], bool] = lambda: True

    def start(self, ready: Callable[[], bool] = lambda: True, poll: bool = True) -> None:
        """Start claiming once `ready()` says the startup models are loaded (a job run earlier would only fail
        with "model still loading" and spend one of its attempts). `poll`: find work in the database (one
        machine); without it, work arrives through `take` (a broker worker)."""
        self._ready = ready
        loops = [self._sweep_loop(), self._watch_loop()]
        if poll:
            loops.append(self._claim_loop())
        self._loops = [asyncio.create_task(loop) for loop in loops]

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

    async def take(self, task_id: str) -> bool:
        """Run this task if it can still be claimed: waits for the models and for a free slot first, so a
        worker takes no more from the broker than it can run. False when someone else has it (or had it)."""
        while not self._ready() or len(self._running) >= self._settings.tasks_concurrency:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), 0.5)
        if not await self._repo.claim(task_id, self.owner, self._settings.tasks_lease_seconds):
            return False
        self._running[task_id] = asyncio.create_task(self._run(task_id), name=f"task-{task_id}")
        return True

    async def _claim_loop(self) -> None:
        while True:
            try:
                free = self._settings.tasks_concurrency - len(self._running)
                if free > 0 and self._ready():
                    for task_id in await self._repo.claimable(free):
                        await self.take(task_id)
            except AppError as exc:
                logger.warning("task runner cannot reach the database: {}", exc.message)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._settings.tasks_poll_interval)

    async def _sweep_loop(self) -> None:
        interval = min(self._settings.tasks_lease_seconds / 2, self._settings.tasks_redispatch_seconds / 2, 5.0)
        while True:
            try:
                await self.sweep()
            except AppError as exc:
                logger.warning("task sweeper cannot reach the database: {}", exc.message)
            await asyncio.sleep(interval)

    async def sweep(self) -> None:
        requeued = await self._repo.requeue_expired()
        await self._repo.fail_exhausted()
        if requeued:
            logger.info("re-queued {} task(s) whose lease expired", requeued)
            self.notify()
        if self._dispatch is not None:
            owed = await self._repo.take_undispatched(SWEEP_BATCH, self._settings.tasks_redispatch_seconds)
            if owed and not await self._dispatch.publish(owed):
                await self._repo.undispatch(owed)
        for row in await self._repo.take_due_webhooks(SWEEP_BATCH, WEBHOOK_MAX_ATTEMPTS):
            await self._send_webhook(row)

    async def _watch_loop(self) -> None:
        """Renew the leases of running tasks and stop those this runner no longer holds (cancelled through the
        API by any process, or re-queued after a lease expired)."""
        interval = min(WATCH_INTERVAL, self._settings.tasks_lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            running = list(self._running)
            try:
                held = await self._repo.renew(running, self.owner, self._settings.tasks_lease_seconds)
            except AppError as exc:
                logger.warning("cannot renew task leases: {}", exc.message)
                continue
            for task_id in running:
                if task_id not in held and self.cancel(task_id):
                    logger.info("task {} is no longer ours (cancelled or re-queued); stopped it", task_id)

    async def _run(self, task_id: str) -> None:
        """Run the job, then record its outcome. The task leaves `_running` as soon as the job ends, so the
        watch loop never mistakes a task this runner just finished for one taken away from it."""
        try:
            row = await self._repo.get(task_id)
            result, error, retryable = await self._attempt(row)
        except asyncio.CancelledError:
            return  # cancelled, no longer ours, or shutting down (handed back)
        except AppError as exc:
            logger.warning("task {}: {}", task_id, exc.message)
            return
        finally:
            self._running.pop(task_id, None)
            self._slot_freed.set()
            self.notify()
        try:
            if error is None:
                finished = await self._repo.finish(task_id, self.owner, TaskStatus.COMPLETED, result=result)
            elif retryable and row.attempts < row.max_attempts:
                delay = min(30.0, 0.5 * 2 ** (row.attempts - 1))
                await self._repo.retry_later(task_id, self.owner, error, delay)
                finished = False
            else:
                finished = await self._repo.finish(task_id, self.owner, TaskStatus.FAILED, error=error)
            if finished:
                await self._deliver_webhook(task_id)
        except AppError as exc:  # the lease runs out and another runner does the task again
            logger.warning("task {}: could not record the outcome: {}", task_id, exc.message)

    async def _attempt(self, row: TaskRow) -> tuple[Any, dict[str, Any] | None, bool]:
        """(result, error, retryable) of one run of the task's job, charged to the task's owner: their budgets,
        their usage, their fair share of the local engine (behind interactive requests)."""
        owner, kind = priority.caller.set(row.owner), priority.work_class.set(WorkClass.TASK)
        started = time.perf_counter()
        outcome: tuple[Any, dict[str, Any] | None, bool] = (None, None, False)
        with opened(row.owner) as record:
            try:
                outcome = await self._jobs[row.kind](row.payload), None, False
            except AppError as exc:
                outcome = None, {"code": exc.error_code, "message": exc.message}, exc.retryable
            except Exception as exc:
                logger.opt(exception=exc).error("task {} crashed", row.id)
                outcome = None, {"code": "internal_error", "message": type(exc).__name__}, False
            finally:
                priority.caller.reset(owner)
                priority.work_class.reset(kind)
        if self._usage is not None:
            self._usage.record_request(record, outcome[1] is not None, time.perf_counter() - started)
        return outcome

    async def _deliver_webhook(self, task_id: str) -> None:
        """First delivery, right after the task ended; a failed one is retried by a sweeper (the outbox)."""
        row = await self._repo.get(task_id)
        if row.webhook_url:
            await self._send_webhook(row)

    async def _send_webhook(self, row: TaskRow) -> None:
        from sop_llm.services.tasks.webhook import deliver_webhook  # aiohttp: imported on the first delivery

        delivery = await deliver_webhook(row, self._settings.webhook_allowed_hosts)
        await self._repo.webhook_attempted(row.id, delivery.delivered, delivery.error, delivery.final)

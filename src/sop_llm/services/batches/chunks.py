"""Running a batch: its lines are cut into chunks, and each chunk is one background task (kind `batch`) on the task
system, so it runs in this process or in any `sop-llm worker`, is retried when its runner dies, and can be
cancelled. A batch has at most BATCH_CONCURRENCY chunks queued or running at a time: each chunk, when done, queues
the chunk BATCH_CONCURRENCY places after it, so one large batch cannot take every task slot. Chunk tasks carry the
key `<batch id>/<chunk>`, which makes queueing one twice harmless."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from loguru import logger

from sop_llm.infra.settings import Settings
from sop_llm.providers.types import WorkClass
from sop_llm.services.batches.model import BatchLineRow, BatchRow, BatchStatus
from sop_llm.services.batches.repository import BatchRepository, Outcome
from sop_llm.services.priority import work_class
from sop_llm.services.tasks.broker import BrokerDispatch
from sop_llm.services.tasks.repository import TaskRepository

CHUNK_KIND = "batch"
# Lines per chunk: embedding lines are cheap and are encoded together; a generation line can take seconds.
EMBEDDING_CHUNK_LINES = 256
GENERATION_CHUNK_LINES = 8
# A line answered 429 or 503 (busy, loading, rate-limited) is asked again, pausing 0.5 s, 1 s, … up to 10 s.
LINE_RETRIES = 10
LINE_RETRY_FIRST_S = 0.5
LINE_RETRY_MAX_S = 10.0


class LineCaller(Protocol):
    async def __call__(self, owner: str | None, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
        """Send one request as `owner` would; (HTTP status, JSON body, request id)."""
        ...


def chunk_lines(endpoint: str) -> int:
    return EMBEDDING_CHUNK_LINES if endpoint == "/v1/embeddings" else GENERATION_CHUNK_LINES


def chunk_key(batch_id: str, chunk: int | None = None) -> str:
    """The idempotency key of a chunk's task; without `chunk`, the prefix every chunk of the batch shares."""
    return f"{batch_id}/" if chunk is None else f"{batch_id}/{chunk}"


class ChunkQueue:
    """Puts chunk tasks on the task system, as TaskService does for a submitted task."""

    def __init__(self, settings: Settings, tasks: TaskRepository, dispatch: BrokerDispatch | None) -> None:
        self._settings = settings
        self.tasks = tasks
        self._dispatch = dispatch
        self.wake: Callable[[], None] = lambda: None  # the local runner's notify, when tasks run in this process

    async def queue(self, batch: BatchRow, chunk: int) -> None:
        row, created = await self.tasks.create(
            CHUNK_KIND,
            {"batch_id": batch.id, "chunk": chunk},
            self._settings.tasks_max_attempts,
            chunk_key(batch.id, chunk),
            dispatched=self._dispatch is not None,
            owner=batch.owner,
        )
        if not created:
            return
        if self._dispatch is not None:
            if not await self._dispatch.publish([row.id]):
                await self.tasks.undispatch([row.id])  # a sweeper hands it over later
        else:
            self.wake()


class BatchChunks:
    """The `batch` task kind: run one chunk's lines that have no outcome yet, record each outcome once, then queue
    the next chunk."""

    def __init__(self, settings: Settings, batches: BatchRepository, queue: ChunkQueue) -> None:
        self._settings = settings
        self._batches = batches
        self._queue = queue
        self.caller: LineCaller | None = None  # set by whoever runs tasks (the API app, or a worker)

    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        work_class.set(WorkClass.BATCH)  # for this job's task and the ones it starts: other work goes first
        batch = await self._batches.get(payload["batch_id"])
        chunk = int(payload["chunk"])
        if batch.status != BatchStatus.IN_PROGRESS:
            return {"batch_id": batch.id, "chunk": chunk, "skipped": batch.status}
        first = chunk * batch.chunk_lines
        lines = await self._batches.open_lines(batch.id, first, first + batch.chunk_lines - 1)
        if batch.endpoint == "/v1/embeddings":  # all at once: the encoder's micro-batcher packs them together
            outcomes = await asyncio.gather(*(self._answer(batch, line) for line in lines))
            await self._batches.record(batch.id, list(outcomes))
        else:
            slots = asyncio.Semaphore(self._settings.batch_line_concurrency)

            async def one(line: BatchLineRow) -> None:
                async with slots:
                    outcome = await self._answer(batch, line)
                await self._batches.record(batch.id, [outcome])

            await asyncio.gather(*(one(line) for line in lines))
        following = chunk + self._settings.batch_concurrency
        if following < batch.chunks and (await self._batches.get(batch.id)).status == BatchStatus.IN_PROGRESS:
            await self._queue.queue(batch, following)
        return {"batch_id": batch.id, "chunk": chunk, "lines": len(lines)}

    async def _answer(self, batch: BatchRow, line: BatchLineRow) -> Outcome:
        """The line's answer. Answers that say "not now" (the model is busy or still loading, a rate limit) are
        asked again after a pause, as a batch has hours and an interactive client does not."""
        assert self.caller is not None, "BatchChunks.caller is set before tasks run"
        assert line.body is not None  # lines without a body were stored finished
        for attempt in range(LINE_RETRIES + 1):
            try:
                status, body, request_id = await self.caller(batch.owner, batch.endpoint, line.body)
            except Exception as exc:  # an answer the endpoint could not give: this line fails, the others go on
                logger.opt(exception=exc).error("batch {} line {} crashed", batch.id, line.line)
                error = {"code": "internal_error", "message": f"the request failed ({type(exc).__name__})"}
                return Outcome(line.seq, None, None, error, None)
            if not _later(status, body) or attempt == LINE_RETRIES:
                break
            await asyncio.sleep(min(LINE_RETRY_MAX_S, LINE_RETRY_FIRST_S * 2**attempt))
        return Outcome(line.seq, status, body, None, request_id)


def _later(status: int, body: dict[str, Any]) -> bool:
    """Whether an answer means "try again later" rather than "this request is wrong" (or over its budget)."""
    if status not in (429, 503):
        return False
    error = body.get("error")
    return not (isinstance(error, dict) and error.get("code") == "budget_exceeded")

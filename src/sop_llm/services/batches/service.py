"""BatchService: create, look up, list and cancel batches, and move them through their lifecycle:
`validating → in_progress → finalizing → completed`, or `failed` (no line can run), `expired` (the completion
window ran out first), `cancelling → cancelled`. Lines run as chunk tasks (chunks.py) in any process that runs
tasks; the steps that write result files run in API processes (they serve the files), in a loop that looks at the
unfinished batches every second. Every step is a conditional update, so replicas can share that work."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger

from sop_llm.infra.errors import AppError, BadRequestError, NotFoundError
from sop_llm.infra.settings import Settings
from sop_llm.services.batches.chunks import ChunkQueue, chunk_key, chunk_lines
from sop_llm.services.batches.input import ENDPOINTS, read_input
from sop_llm.services.batches.model import BatchRow, BatchStatus
from sop_llm.services.batches.output import ResultFiles
from sop_llm.services.batches.repository import BatchRepository, Progress, now
from sop_llm.services.files.service import FileService

COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}
ADVANCE_INTERVAL = 1.0
# A batch left `finalizing` this long by a process that died is finalized again by another.
FINALIZE_STALE = timedelta(minutes=2)
# Chunk runners notice a cancellation within a second (their lease renewal); results come in until then.
CANCEL_GRACE = timedelta(seconds=1.5)
ERRORS_LISTED = 1000  # the batch object lists at most this many bad input lines (the error file has all)
UNFINISHED = (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING)


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class BatchService:
    def __init__(
        self,
        settings: Settings,
        batches: BatchRepository,
        files: FileService,
        queue: ChunkQueue,
        cancel_running: Any = None,
    ) -> None:
        """`cancel_running(task_id)`: stop a chunk task this process runs (the local runner's cancel), if any."""
        self._settings = settings
        self.repository = batches
        self._files = files
        self._queue = queue
        self._cancel_running = cancel_running
        self._loop: asyncio.Task[None] | None = None

    async def create(
        self, input_file_id: str, endpoint: str, window: str, tags: dict[str, str] | None, owner: str | None
    ) -> tuple[BatchRow, Progress]:
        if endpoint not in ENDPOINTS:
            raise BadRequestError(f"endpoint: must be one of {', '.join(ENDPOINTS)}", param="endpoint")
        if window not in COMPLETION_WINDOWS:
            raise BadRequestError("completion_window: must be '24h'", param="completion_window")
        try:
            source, data = await self._files.read(input_file_id, owner)
        except NotFoundError:
            raise BadRequestError(f"input_file_id: no file with id '{input_file_id}'", param="input_file_id") from None
        if source.purpose != "batch":
            raise BadRequestError(
                f"input_file_id: file '{input_file_id}' has purpose '{source.purpose}'; upload with purpose 'batch'",
                param="input_file_id",
            )
        lines = await asyncio.to_thread(read_input, data, endpoint)
        stamp = now()
        size = chunk_lines(endpoint)
        bad = [line.error for line in lines if line.error is not None]
        runnable = len(lines) - len(bad)
        row = BatchRow(
            id=new_batch_id(),
            owner=owner,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=window,
            status=BatchStatus.IN_PROGRESS if runnable else BatchStatus.FAILED,
            tags=tags,
            errors=bad[:ERRORS_LISTED] or None,
            total=len(lines),
            chunks=-(-len(lines) // size),
            chunk_lines=size,
            created_at=stamp,
            expires_at=stamp + COMPLETION_WINDOWS[window],
            in_progress_at=stamp if runnable else None,
            failed_at=None if runnable else stamp,
        )
        if not lines:
            row.errors = [
                {"code": "empty_file", "message": "the input file has no request lines", "param": None, "line": None}
            ]
        if not runnable:  # nothing will run: the errors say why, and no line is kept
            row.failed_lines, lines = len(lines), []
        await self.repository.create(row, lines)
        for chunk in range(min(row.chunks, self._settings.batch_concurrency) if runnable else 0):
            await self._queue.queue(row, chunk)
        return row, (await self._progress([row]))[row.id]

    async def _progress(self, rows: list[BatchRow]) -> dict[str, Progress]:
        """Counted from the lines while a batch runs; an ended batch keeps its counts on its row."""
        counted = await self.repository.progress([row.id for row in rows if row.status in UNFINISHED])
        for row in rows:
            if row.id not in counted:
                counted[row.id] = Progress(
                    row.completed_lines + row.failed_lines, row.completed_lines, row.failed_lines
                )
        return counted

    async def get(self, batch_id: str, owner: str | None) -> tuple[BatchRow, Progress]:
        row = await self.repository.get(batch_id)
        if row.owner != owner:
            raise NotFoundError(f"no batch with id '{batch_id}'", param="batch_id")
        return row, (await self._progress([row]))[row.id]

    async def search(
        self, owner: str | None, limit: int, after: str | None
    ) -> tuple[list[tuple[BatchRow, Progress]], bool]:
        rows, more = await self.repository.search(owner, limit, after)
        progress = await self._progress(rows)
        return [(row, progress[row.id]) for row in rows], more

    async def cancel(self, batch_id: str, owner: str | None) -> tuple[BatchRow, Progress]:
        """Stop the batch: queued chunks are dropped and running ones stopped (within a second in any process);
        lines answered so far go into its result files."""
        row, _ = await self.get(batch_id, owner)
        if row.status not in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
            raise BadRequestError(f"batch '{batch_id}' is {row.status} and cannot be cancelled", param="batch_id")
        await self.repository.move(
            batch_id, (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS), BatchStatus.CANCELLING, cancelling_at=now()
        )
        await self._stop_chunks(batch_id)
        return await self.get(batch_id, owner)

    async def _stop_chunks(self, batch_id: str) -> None:
        for task_id in await self._queue.tasks.cancel_keyed(chunk_key(batch_id)):
            if self._cancel_running is not None:
                self._cancel_running(task_id)

    # The lifecycle steps that follow the lines' work, run by API processes.

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._advance_loop(), name="batches")

    async def aclose(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    async def _advance_loop(self) -> None:
        while True:
            try:
                await self.advance()
            except AppError as exc:
                logger.warning("batches cannot reach the database: {}", exc.message)
            except Exception as exc:  # one bad batch must not stop the others for good
                logger.opt(exception=exc).error("advancing batches failed")
            await asyncio.sleep(ADVANCE_INTERVAL)

    async def advance(self) -> None:
        """Take each unfinished batch one step further when it can go."""
        for row in await self.repository.in_states(UNFINISHED):
            await self._advance(row)

    async def _advance(self, row: BatchRow) -> None:
        stamp = now()
        if row.status == BatchStatus.FINALIZING:
            if row.finalizing_at is not None and _aware(row.finalizing_at) < stamp - FINALIZE_STALE:
                await self._finalize(row, BatchStatus.FINALIZING, self._end_state(row), row.finalizing_at)
            return
        if row.status == BatchStatus.CANCELLING:
            await self._stop_chunks(row.id)  # a chunk that queued its successor while the batch was cancelled
            if row.cancelling_at is None or _aware(row.cancelling_at) < stamp - CANCEL_GRACE:
                await self._finalize(row, BatchStatus.CANCELLING, BatchStatus.CANCELLED)
            return
        if _aware(row.expires_at) <= stamp:
            await self._stop_chunks(row.id)
            error = {"code": "batch_expired", "message": "the batch's completion window ended before this line ran"}
            await self.repository.close_open_lines(row.id, error)
            await self._finalize(row, BatchStatus.IN_PROGRESS, BatchStatus.EXPIRED)
            return
        progress = (await self.repository.progress([row.id]))[row.id]
        if progress.finished < row.total:
            if not await self._queue.tasks.count_keyed(chunk_key(row.id)):
                await self._resume(row)  # no chunk is queued or running, yet lines are open
            return
        await self._finalize(row, BatchStatus.IN_PROGRESS, BatchStatus.COMPLETED)

    async def _resume(self, row: BatchRow) -> None:
        """Queue the next chunks with open lines again: their chain was cut (the process that stored the batch died
        before queueing its chunks, or a chunk failed and so never queued its successor). A chunk whose own task
        ended without answering its lines (it failed every attempt) gets their lines failed."""
        for chunk in (await self.repository.open_chunks(row.id, row.chunk_lines))[: self._settings.batch_concurrency]:
            task = await self._queue.tasks.find_by_key(chunk_key(row.id, chunk))
            if task is None:
                logger.info("batch {}: chunk {} was never queued; queueing it", row.id, chunk)
                await self._queue.queue(row, chunk)
                continue
            reason = (task.error or {}).get("message") or f"it ended {task.status}"
            error = {"code": "batch_line_failed", "message": f"the task that ran this line failed: {reason}"}
            first = chunk * row.chunk_lines
            closed = await self.repository.close_open_lines(row.id, error, first, first + row.chunk_lines - 1)
            logger.warning("batch {}: chunk {} task {} {}; {} line(s) failed", row.id, chunk, task.id, reason, closed)

    @staticmethod
    def _end_state(row: BatchRow) -> BatchStatus:
        if row.cancelling_at is not None:
            return BatchStatus.CANCELLED
        if _aware(row.expires_at) <= now():
            return BatchStatus.EXPIRED
        return BatchStatus.COMPLETED

    async def _finalize(
        self, row: BatchRow, leaving: BatchStatus, end: BatchStatus, stale_claim: datetime | None = None
    ) -> None:
        """Write the result files and end the batch in `end`. The claim (status → finalizing, stamped) makes one
        process do it; a claim left stale by a process that died (`stale_claim`) is taken over, and the process
        that held it, if it was only slow, can then no longer end the batch or delete its lines."""
        claimed = now()
        if not await self.repository.move(
            row.id, (leaving,), BatchStatus.FINALIZING, finalizing_since=stale_claim, finalizing_at=claimed
        ):
            return
        hexid = row.id.removeprefix("batch_")
        output_id = error_id = None
        with ResultFiles(row.id) as files:
            async for page in self.repository.line_pages(row.id):
                await files.add(page)
            if files.completed:
                output_id = f"file-{hexid}-output"
                name = f"{row.id}_output.jsonl"
                await self._files.save_output(output_id, await files.output(), files.completed, name, row.owner)
            if files.failed:
                error_id = f"file-{hexid}-errors"
                name = f"{row.id}_errors.jsonl"
                await self._files.save_output(error_id, await files.errors(), files.failed, name, row.owner)
        ended = {
            BatchStatus.COMPLETED: "completed_at",
            BatchStatus.CANCELLED: "cancelled_at",
            BatchStatus.EXPIRED: "expired_at",
        }[end]
        with contextlib.suppress(AppError):
            ended_here = await self.repository.move(
                row.id,
                (BatchStatus.FINALIZING,),
                end,
                finalizing_since=claimed,
                output_file_id=output_id,
                error_file_id=error_id,
                completed_lines=files.completed,
                failed_lines=files.failed,
                **{ended: now()},
            )
            if ended_here:
                await self.repository.forget_lines(row.id)
        logger.info("batch {} {}: output {}, errors {}", row.id, end, output_id, error_id)

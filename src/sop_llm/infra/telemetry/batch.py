"""The spans waiting for export: encoded when they end, queued, and POSTed in batches by a task on the event loop.

Why no export thread (as OpenTelemetry's SDK has): its work is Python, and a thread running Python takes the GIL
from the event loop, which gives it up at every socket call and then waits for it back. Measured at 64
connections (8 alternating rounds), POSTing from a thread added ~26 µs of service CPU a request over not
exporting at all; POSTing from the loop added nothing measurable (one POST of up to 512 spans is a fraction of a
millisecond there).

The standard batch processor variables are read once, at startup: OTEL_BSP_SCHEDULE_DELAY (ms between exports),
OTEL_BSP_MAX_EXPORT_BATCH_SIZE (spans a POST; a full batch is sent at once), OTEL_BSP_MAX_QUEUE_SIZE (spans kept
while waiting; past it new spans are dropped and counted) and OTEL_BSP_EXPORT_TIMEOUT (ms: how long shutdown waits
for the last export).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from loguru import logger


class BatchSettings(NamedTuple):
    schedule_delay_s: float = 5.0
    max_batch: int = 512
    max_queue: int = 2048
    export_timeout_s: float = 30.0

    @classmethod
    def from_environment(cls) -> BatchSettings:
        return cls(
            schedule_delay_s=_number("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
            max_batch=int(_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)),
            max_queue=int(_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)),
            export_timeout_s=_number("OTEL_BSP_EXPORT_TIMEOUT", 30000) / 1000,
        )


def _number(name: str, default: float) -> float:
    """A positive number from the environment; the default (with a warning) for anything else."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0
    if value > 0:
        return value
    logger.warning("{}={!r} is not a positive number; using {}", name, raw, default)
    return default


class SpanBatcher:
    """Encoded spans, queued until the export task sends them: every `schedule_delay_s`, or as soon as a batch is
    full. `add` never blocks and is safe from any thread; `start` and `aclose` run on the event loop."""

    def __init__(self, export: Callable[[list[bytes]], Awaitable[object]], settings: BatchSettings) -> None:
        self._export = export
        self._settings = settings
        self._max_queue, self._max_batch = settings.max_queue, settings.max_batch  # read on every span
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="otlp-export")

    def add(self, span: bytes) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            if not self.dropped:
                logger.warning(
                    "the span export queue is full ({} spans): spans are dropped until it drains; raise "
                    "OTEL_BSP_MAX_QUEUE_SIZE, or check that the collector keeps up",
                    self._settings.max_queue,
                )
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) == self._max_batch and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.schedule_delay_s):
                    await self._wake.wait()
            self._wake.clear()
            await self._send(everything=False)
        await self._send(everything=True)

    async def _send(self, everything: bool) -> None:
        """One batch, then more while full batches wait (or while any span does, when `everything`)."""
        queue, size = self._queue, self._settings.max_batch
        while queue:
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            try:
                await self._export(batch)
            except Exception:  # an exporter bug must not end the task: later spans would pile up unseen
                logger.exception("exporting {} spans failed", len(batch))
            if not everything and len(queue) < size:
                return

    async def aclose(self) -> None:
        """Send what is queued (waiting at most OTEL_BSP_EXPORT_TIMEOUT) and stop the task."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        try:
            async with asyncio.timeout(self._settings.export_timeout_s):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            logger.warning("the last span export did not finish in time; {} spans dropped", len(self._queue))

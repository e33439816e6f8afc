"""The spans waiting for export: encoded when they end, on the thread that ends them, and POSTed in batches by one
export thread.

Why encode on the request path rather than in the export thread: the encoding is pure Python, and a thread that
runs Python holds the GIL. The event loop gives the GIL up at every socket call and then waits up to the switch
interval (5 ms) to get it back, so 5 ms of encoding in a thread cost the loop several times that at 64
connections. Encoded where they end, spans cost the loop only their own few microseconds; the thread's share is
a join and a POST a batch.

The standard batch processor variables are read once, at startup: OTEL_BSP_SCHEDULE_DELAY (ms between exports),
OTEL_BSP_MAX_EXPORT_BATCH_SIZE (spans a POST; a full batch is sent at once), OTEL_BSP_MAX_QUEUE_SIZE (spans kept
while waiting; past it new spans are dropped and counted) and OTEL_BSP_EXPORT_TIMEOUT (ms: how long shutdown waits
for the last export).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
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
    """Encoded spans, queued until the export thread sends them: every `schedule_delay_s`, or as soon as a batch is
    full. `add` is safe from any thread and never blocks."""

    def __init__(self, export: Callable[[list[bytes]], object], settings: BatchSettings) -> None:
        self._export = export
        self._settings = settings
        self._queue: deque[bytes] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    def add(self, span: bytes) -> None:
        queue = self._queue
        if len(queue) >= self._settings.max_queue:
            if not self.dropped:
                logger.warning(
                    "the span export queue is full ({} spans): spans are dropped until it drains; raise "
                    "OTEL_BSP_MAX_QUEUE_SIZE, or check that the collector keeps up",
                    self._settings.max_queue,
                )
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) == self._settings.max_batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._settings.schedule_delay_s)
            self._wake.clear()
            self._send(everything=False)
        self._send(everything=True)

    def _send(self, everything: bool) -> None:
        """One batch, then more while full batches wait (or while any span does, when `everything`)."""
        queue, size = self._queue, self._settings.max_batch
        while queue:
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            try:
                self._export(batch)
            except Exception:  # an exporter bug must not end the thread: later spans would pile up unseen
                logger.exception("exporting {} spans failed", len(batch))
            if not everything and len(queue) < size:
                return

    def shutdown(self) -> None:
        """Send what is queued and stop the thread (blocking: call it off the event loop)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(self._settings.export_timeout_s)

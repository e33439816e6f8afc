"""The span export queue (infra/telemetry/batch.py): a full batch goes at once, shutdown sends what is left, a full
queue drops new spans and counts them, and an export that raises does not stop the ones after it. The exporter
here is a function that keeps what it is handed; tests/integration/test_opentelemetry.py exports to a live
receiver."""

from __future__ import annotations

import asyncio

import pytest

from sop_llm.infra.telemetry.batch import BatchSettings, SpanBatcher

pytestmark = pytest.mark.unit

NEVER = 3600.0  # a schedule delay no test waits for: batches go because they are full, or at shutdown


class Kept:
    """An exporter that keeps each batch; `fail_first` raises on the first one."""

    def __init__(self, fail_first: bool = False) -> None:
        self.batches: list[list[bytes]] = []
        self.fail_first = fail_first
        self.arrived = asyncio.Event()

    async def __call__(self, batch: list[bytes]) -> None:
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("the collector's answer could not be read")
        self.batches.append(batch)
        self.arrived.set()


async def test_a_full_batch_is_sent_without_waiting_for_the_delay() -> None:
    kept = Kept()
    batcher = SpanBatcher(kept, BatchSettings(schedule_delay_s=NEVER, max_batch=3, max_queue=10))
    batcher.start()
    for span in (b"a", b"b", b"c", b"d"):
        batcher.add(span)
    await asyncio.wait_for(kept.arrived.wait(), 10)
    assert kept.batches == [[b"a", b"b", b"c"]]
    await batcher.aclose()
    assert kept.batches == [[b"a", b"b", b"c"], [b"d"]]


async def test_shutdown_sends_what_is_queued_in_batches() -> None:
    kept = Kept()
    batcher = SpanBatcher(kept, BatchSettings(schedule_delay_s=NEVER, max_batch=2, max_queue=10))
    batcher.start()
    batcher.add(b"a")
    await batcher.aclose()
    assert kept.batches == [[b"a"]]


async def test_a_full_queue_drops_new_spans_and_counts_them() -> None:
    kept = Kept()
    batcher = SpanBatcher(kept, BatchSettings(schedule_delay_s=NEVER, max_batch=100, max_queue=4))
    for span in (b"1", b"2", b"3", b"4", b"5", b"6"):  # not started: nothing drains the queue
        batcher.add(span)
    assert batcher.dropped == 2
    batcher.start()
    await batcher.aclose()
    assert kept.batches == [[b"1", b"2", b"3", b"4"]]


async def test_an_export_that_raises_does_not_stop_the_next_ones() -> None:
    kept = Kept(fail_first=True)
    batcher = SpanBatcher(kept, BatchSettings(schedule_delay_s=NEVER, max_batch=1, max_queue=10))
    batcher.start()
    batcher.add(b"lost")
    batcher.add(b"kept")
    await asyncio.wait_for(kept.arrived.wait(), 10)
    await batcher.aclose()
    assert kept.batches == [[b"kept"]]


def test_the_batch_variables_are_read_and_bad_ones_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "-5")
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "soon")
    assert BatchSettings.from_environment() == BatchSettings(
        schedule_delay_s=0.25, max_batch=64, max_queue=2048, export_timeout_s=30.0
    )

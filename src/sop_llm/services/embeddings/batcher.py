"""Dynamic micro-batching for embeddings.

Concurrent `submit()` calls are queued; one loop takes up to `batch_size` texts at a time (waiting at most
`wait_s` for a batch to fill when the queue is short) and encodes them in one call on a single worker thread.
While a batch encodes, the next one gathers, so under load batches fill without any waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from sop_llm.infra.errors import OverloadedError

EncodeFn = Callable[[list[str]], tuple[np.ndarray, list[int]]]


@dataclass
class BatchStats:
    batches: int = 0
    texts: int = 0
    max_batch: int = 0
    queued: int = 0


@dataclass(eq=False)
class _Request:
    texts: list[str]
    future: asyncio.Future[tuple[np.ndarray, list[int]]]
    vectors: list[np.ndarray | None] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    next_index: int = 0
    remaining: int = 0


class EmbeddingBatcher:
    def __init__(self, encode: EncodeFn, executor: Executor, batch_size: int, wait_s: float, max_queue: int) -> None:
        self._encode = encode
        self._executor = executor
        self._batch_size = batch_size
        self._wait_s = wait_s
        self._max_queue = max_queue
        self._pending: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="embedding-batcher")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for request in self._pending:
            if not request.future.done():
                request.future.cancel()
        self._pending.clear()

    async def submit(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        if self.stats.queued + len(texts) > self._max_queue:
            raise OverloadedError(
                f"the embedding queue is full ({self.stats.queued} texts waiting); retry shortly",
                retry_after=1,
            )
        loop = asyncio.get_running_loop()
        request = _Request(texts, loop.create_future(), [None] * len(texts), [0] * len(texts), 0, len(texts))
        self._pending.append(request)
        self.stats.queued += len(texts)
        self._wakeup.set()
        return await request.future

    def _take_batch(self) -> list[tuple[_Request, int]]:
        batch: list[tuple[_Request, int]] = []
        while self._pending and len(batch) < self._batch_size:
            request = self._pending[0]
            if request.future.done():  # the caller went away
                self._pending.popleft()
                self.stats.queued -= len(request.texts) - request.next_index
                continue
            take = min(self._batch_size - len(batch), len(request.texts) - request.next_index)
            batch.extend((request, i) for i in range(request.next_index, request.next_index + take))
            request.next_index += take
            if request.next_index == len(request.texts):
                self._pending.popleft()
        self.stats.queued -= len(batch)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            if self._wait_s and self.stats.queued < self._batch_size:
                await asyncio.sleep(self._wait_s)
            batch = self._take_batch()
            if not self._pending:
                self._wakeup.clear()
            if not batch:
                continue
            texts = [request.texts[i] for request, i in batch]
            try:
                vectors, tokens = await loop.run_in_executor(self._executor, self._encode, texts)
            except Exception as exc:
                for request in {request for request, _ in batch}:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.texts += len(texts)
            self.stats.max_batch = max(self.stats.max_batch, len(texts))
            for row, (request, i) in enumerate(batch):
                request.vectors[i] = vectors[row]
                request.tokens[i] = tokens[row]
                request.remaining -= 1
                if request.remaining == 0 and not request.future.done():
                    request.future.set_result((np.stack(request.vectors), request.tokens))  # type: ignore[arg-type]

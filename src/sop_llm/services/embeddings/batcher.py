"""Dynamic micro-batching for embeddings, ordered by length, tokenizing ahead of the model.

Concurrent `submit()` calls are queued text by text. Two loops work through the queue:

- the tokenizer loop turns waiting texts into token ids on its own thread (for providers that split encoding into
  `tokenize` and `forward`), so the next batch is tokenized while the current one runs on the model's thread;
- the batch loop takes up to `_WINDOW` batches' worth of the oldest tokenized texts (waiting at most `wait_s` for a
  batch to fill when the queue is short), sorts them by length and cuts them into batches of `batch_size`, so texts
  of similar length share a batch and little of each batch is padding. Each batch runs in one call on the model's
  single worker thread.

Providers without the split encode whole batches of texts in one call (`encode`); their texts are sorted by
character length instead. The window bounds how long a text can wait behind others: at most `_WINDOW` batches.

Background texts (submitted by a task or a batch's lines: `services.priority.in_background`) wait in their own
lane. The batch loop runs them only when no other text is ready, one batch at a time (still sorted within a window), and
while other requests keep coming, in small batches, so such a request waits for at most one small background
batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sop_llm.infra.errors import OverloadedError
from sop_llm.services.priority import in_background

if TYPE_CHECKING:  # numpy is imported with the first batch, not at startup
    import numpy as np

    EncodeFn = Callable[[list[str]], tuple[np.ndarray, list[int]]]
    TokenizeFn = Callable[[list[str]], list[np.ndarray]]  # token ids per text, already truncated
    ForwardFn = Callable[[list[np.ndarray]], np.ndarray]  # one batch of token ids -> vectors [n, dims]

_WINDOW = 4  # batches sorted together
# While other requests come in (one in the last _YIELD_S), background texts run in batches this small, so such a
# request waits ~14 ms rather than ~250 ms for the model. The model alone loses little by it (MiniLM int8 on
# onnxruntime, 2 cores: 292 texts/s in batches of 4, 249/s in batches of 64, unsorted), but each batch's round trip
# to the model's thread does, so with nobody else waiting background texts go in full batches.
_BACKGROUND_BATCH = 4
_YIELD_S = 1.0


@runtime_checkable
class TokenizingEncoder(Protocol):
    """A provider that splits encoding in two steps, so that tokenizing overlaps the model's work."""

    def tokenize_blocking(self, texts: list[str]) -> list[np.ndarray]: ...

    def forward_blocking(self, ids: list[np.ndarray]) -> np.ndarray: ...


@dataclass
class BatchStats:
    batches: int = 0
    texts: int = 0
    max_batch: int = 0
    queued: int = 0
    tokens: int = 0  # each batch's texts padded to its longest one, summed (tokenizing providers only)
    padding: int = 0  # of which padding


@dataclass(eq=False)
class _Request:
    future: asyncio.Future[tuple[np.ndarray, list[int]]]
    vectors: list[np.ndarray | None]
    tokens: list[int]
    remaining: int


@dataclass(eq=False, slots=True)
class _Item:
    request: _Request
    index: int
    text: str
    ids: np.ndarray | None = field(default=None)

    @property
    def length(self) -> int:
        return len(self.text) if self.ids is None else len(self.ids)


class EmbeddingBatcher:
    def __init__(
        self,
        encode: EncodeFn,
        executor: Executor,
        batch_size: int,
        wait_s: float,
        max_queue: int,
        *,
        tokenize: TokenizeFn | None = None,
        forward: ForwardFn | None = None,
    ) -> None:
        if (tokenize is None) != (forward is None):
            raise ValueError("tokenize and forward go together")
        self._encode = encode
        self._tokenize = tokenize
        self._forward = forward
        self._executor = executor
        self._tokenizer_executor: ThreadPoolExecutor | None = None
        self._batch_size = batch_size
        self._wait_s = wait_s
        self._max_queue = max_queue
        self._untokenized: deque[_Item] = deque()
        self._ready: deque[_Item] = deque()
        self._untokenized_background: deque[_Item] = deque()
        self._ready_background: deque[_Item] = deque()
        self._interactive_at = float("-inf")
        self._has_untokenized = asyncio.Event()
        self._has_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = BatchStats()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._batch_loop(), name="embedding-batcher"))
        if self._tokenize is not None:
            self._tokenizer_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-tokenizer")
            self._tasks.append(asyncio.create_task(self._tokenizer_loop(), name="embedding-tokenizer"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._tokenizer_executor is not None:
            self._tokenizer_executor.shutdown(wait=False, cancel_futures=True)
            self._tokenizer_executor = None
        lanes = (self._untokenized, self._ready, self._untokenized_background, self._ready_background)
        for lane in lanes:
            for item in lane:
                if not item.request.future.done():
                    item.request.future.cancel()
            lane.clear()

    async def submit(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        if self.stats.queued + len(texts) > self._max_queue:
            raise OverloadedError(
                f"the embedding queue is full ({self.stats.queued} texts waiting); retry shortly",
                retry_after=1,
            )
        loop = asyncio.get_running_loop()
        request = _Request(loop.create_future(), [None] * len(texts), [0] * len(texts), len(texts))
        items = (_Item(request, i, text) for i, text in enumerate(texts))
        later = in_background()
        if not later:
            self._interactive_at = time.monotonic()
        if self._tokenize is None:
            (self._ready_background if later else self._ready).extend(items)
            self._has_ready.set()
        else:
            (self._untokenized_background if later else self._untokenized).extend(items)
            self._has_untokenized.set()
        self.stats.queued += len(texts)
        return await request.future

    def _drop_abandoned(self, items: list[_Item]) -> list[_Item]:
        """Items whose caller went away (or failed) are not worth the work."""
        live = [item for item in items if not item.request.future.done()]
        self.stats.queued -= len(items) - len(live)
        return live

    # -- tokenizer loop ----------------------------------------------------------------------------
    async def _tokenizer_loop(self) -> None:
        assert self._tokenize is not None and self._tokenizer_executor is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._has_untokenized.wait()
            later = not self._untokenized
            lane = self._untokenized_background if later else self._untokenized
            take = min(len(lane), self._batch_size * _WINDOW)
            items = self._drop_abandoned([lane.popleft() for _ in range(take)])
            if not self._untokenized and not self._untokenized_background:
                self._has_untokenized.clear()
            if not items:
                continue
            try:
                ids = await loop.run_in_executor(self._tokenizer_executor, self._tokenize, [i.text for i in items])
            except Exception as exc:
                self.stats.queued -= len(items)
                _fail(items, exc)
                continue
            for item, row in zip(items, ids, strict=True):
                item.ids = row
            (self._ready_background if later else self._ready).extend(items)
            self._has_ready.set()

    # -- batch loop --------------------------------------------------------------------------------
    def _take_window(self) -> list[list[_Item]]:
        """The oldest ready texts, up to `_WINDOW` batches' worth, sorted by length and cut into batches; when only
        background texts are ready, the first such batch alone (the rest go back, sorted, to wait their turn)."""
        later = not self._ready
        lane = self._ready_background if later else self._ready
        take = min(len(lane), self._batch_size * _WINDOW)
        items = self._drop_abandoned([lane.popleft() for _ in range(take)])
        items.sort(key=lambda item: item.length)
        if later:
            yielding = time.monotonic() - self._interactive_at < _YIELD_S
            size = min(self._batch_size, _BACKGROUND_BATCH) if yielding else self._batch_size
            lane.extendleft(reversed(items[size:]))
            items = items[:size]
        if not self._ready and not self._ready_background:
            self._has_ready.clear()
        return [items[i : i + self._batch_size] for i in range(0, len(items), self._batch_size)]

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._has_ready.wait()
            if self._wait_s and self.stats.queued < self._batch_size:
                await asyncio.sleep(self._wait_s)
            for batch in self._take_window():
                batch = self._drop_abandoned(batch)
                if not batch:
                    continue
                self.stats.queued -= len(batch)
                try:
                    vectors, tokens = await loop.run_in_executor(self._executor, self._run, batch)
                except Exception as exc:
                    _fail(batch, exc)
                    continue
                self._deliver(batch, vectors, tokens)

    def _run(self, batch: list[_Item]) -> tuple[np.ndarray, list[int]]:
        """On the model's thread: one batch through the model."""
        if self._forward is None:
            return self._encode([item.text for item in batch])
        ids = [item.ids for item in batch]
        assert all(row is not None for row in ids)
        tokens = [len(row) for row in ids]  # type: ignore[arg-type]
        return self._forward(ids), tokens  # type: ignore[arg-type]

    def _deliver(self, batch: list[_Item], vectors: np.ndarray, tokens: list[int]) -> None:
        import numpy as np

        self.stats.batches += 1
        self.stats.texts += len(batch)
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        if self._forward is not None:
            padded = len(batch) * max(tokens)
            self.stats.tokens += padded
            self.stats.padding += padded - sum(tokens)
        for row, item in enumerate(batch):
            request = item.request
            request.vectors[item.index] = vectors[row]
            request.tokens[item.index] = tokens[row]
            request.remaining -= 1
            if request.remaining == 0 and not request.future.done():
                request.future.set_result((np.stack(request.vectors), request.tokens))  # type: ignore[arg-type]


def _fail(items: list[_Item], exc: Exception) -> None:
    for request in {item.request for item in items}:
        if not request.future.done():
            request.future.set_exception(exc)

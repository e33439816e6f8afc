"""Bridge a blocking producer running in a worker thread to an async iterator, with cancellation.

The producer gets `emit(item)` and a `threading.Event`; it must check the event between steps and return
when it is set. Closing or cancelling the iterator sets the event and waits for the thread to stop, so the
resource the producer used (a model instance) is released only once the thread has really stopped:
`release` runs on the event loop after the producer returns, whatever happened on the async side.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")


class Counters:
    """Thread-safe counters a local provider updates from its worker thread and reports in `stats()`; they show
    that cancelled work really stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tokens_generated = 0
        self.generations = 0
        self.cancelled = 0

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self, **extra: int) -> dict[str, int]:
        with self._lock:
            counts = {"tokens_generated": self.tokens_generated, "generations": self.generations}
            return {**counts, "cancelled": self.cancelled, **extra}


class _Done:
    pass


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = _Done()


class ThreadStream(Generic[T]):
    def __init__(
        self,
        executor: Executor,
        produce: Callable[[Callable[[T], None], threading.Event], None],
        release: Callable[[], None] = lambda: None,
    ) -> None:
        self._executor = executor
        self._produce = produce
        self._release = release
        self.cancel = threading.Event()

    async def __aiter__(self) -> AsyncIterator[T]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[T | _Done | _Failure] = asyncio.Queue()

        def put(item: T | _Done | _Failure) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self.cancel.set()

        def run() -> None:
            try:
                self._produce(put, self.cancel)
            except BaseException as exc:
                put(_Failure(exc))
            else:
                put(_DONE)
            finally:
                try:
                    loop.call_soon_threadsafe(self._release)
                except RuntimeError:
                    self._release()

        future = loop.run_in_executor(self._executor, run)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            self.cancel.set()
            if not future.done():
                # Wait for the producer to notice; a second cancellation must not leave it unobserved.
                await asyncio.wait([future])

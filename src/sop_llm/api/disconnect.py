"""Cancel work when the HTTP client goes away (non-streaming requests; streams use EventStreamResponse)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready; the work was cancelled."""


# Most answers (cache hits, fast upstreams) are done before this; for them no watcher task is ever made.
WATCH_AFTER_S = 0.05


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task; if it is still running after WATCH_AFTER_S, a small watcher task waits for
    `http.disconnect` and, when it comes, cancels this task. A disconnect that happened earlier is seen as soon as
    the watcher starts (the server reports it to the next `receive()`)."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    assert current is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        current.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            current.uncancel()
            raise ClientDisconnected from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()

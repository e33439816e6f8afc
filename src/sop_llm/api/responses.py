"""Fast JSON and Server-Sent-Events responses."""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from functools import partial
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_response(content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def sse_event(data: Any, event: str | None = None) -> bytes:
    payload = b"data: " + orjson.dumps(data) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + payload if event else payload


class EventStreamResponse(Response):
    """Streams `text/event-stream` and cancels the body iterator the moment the client disconnects.

    Starlette's StreamingResponse only notices a disconnect when a write fails (ASGI spec 2.4); generation
    must stop at once, so this one always listens for `http.disconnect` alongside the stream.
    """

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterable[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _wait_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def run_then_stop(func: Any) -> None:
                await func()
                group.cancel_scope.cancel()

            group.start_soon(run_then_stop, partial(self._stream, send))
            await run_then_stop(partial(self._wait_disconnect, receive))

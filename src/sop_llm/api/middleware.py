"""Trace context (R-M5): take or make a trace id per request and return it as `X-Request-ID`."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sop_llm.infra.trace import set_trace_id, trace_id_from_headers


class TraceMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = traceparent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
        trace_id = trace_id_from_headers(request_id, traceparent)
        set_trace_id(trace_id)
        header = (b"x-request-id", trace_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)

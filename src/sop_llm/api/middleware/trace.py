"""Trace context: take or make a trace id per request and return it as `X-Request-ID`; name the deployment that
answered in `X-Served-By` when the model has several. With tracing on (infra/telemetry), also open the request's
SERVER span (continuing the caller's W3C `traceparent`) and return it as a `traceparent` response header.

It also answers unexpected exceptions itself (a 500 in the surface's error shape), so that response carries the
header too: Starlette's own last-resort handler sits outside every user middleware.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sop_llm.api.errors import error_response
from sop_llm.api.internal_error import internal_error
from sop_llm.api.request_state import route_template
from sop_llm.infra.trace import set_trace_id, trace_id_from_headers
from sop_llm.services.monitoring.metrics import Metrics, start_request
from sop_llm.services.routing import served

if TYPE_CHECKING:
    from sop_llm.infra.telemetry.otel import Tracing

_STREAMED = (b"text/event-stream", b"application/x-ndjson")  # SSE, and Ollama's streams


class TraceMiddleware:
    """Also measures every HTTP request for /metrics: route template, status, latency, and gateway overhead."""

    def __init__(self, app: ASGIApp, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

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
        span = None
        if self.tracing is not None and scope["type"] == "http":
            span = self.tracing.start_request(scope, trace_id, request_id, traceparent)
            traced = (b"traceparent", span.traceparent.encode("latin-1"))
        error_type: str | None = None

        started = False
        status = 500
        streamed = False

        async def send_with_id(message: Message) -> None:
            nonlocal started, status, streamed
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = message.get("headers", ())
                streamed = any(n == b"content-type" and v.startswith(_STREAMED) for n, v in headers)
                message["headers"] = [*headers, header]
                if span is not None:
                    message["headers"].append(traced)
                if served_by:
                    message["headers"].append((b"x-served-by", served_by[-1].encode("latin-1")))
            await send(message)

        began = time.perf_counter()
        upstream = start_request()
        served_by = served.start_request()
        self.metrics.active += 1
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            error_type = type(exc).__qualname__
            if started or scope["type"] != "http":
                raise
            error = internal_error(exc, f"{scope.get('method')} {scope.get('path')}")
            response = error_response(Request(scope, receive), error)
            await response(scope, receive, send_with_id)
        finally:
            self.metrics.active -= 1
            if scope["type"] == "http":
                route = route_template(scope)
                if span is not None:
                    span.finish(scope, route, status, error_type)
                self.metrics.observe_request(
                    route or "unmatched",
                    scope["method"],
                    status,
                    time.perf_counter() - began,
                    sum(upstream) if upstream and not streamed else None,
                )

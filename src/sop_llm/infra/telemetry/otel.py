"""The service's traces, behind the small interface of `active`. Imported only when tracing is on.

Spans here are plain objects, written to OTLP protobuf by `otlp` when they end (the SDK's own span, processor and
encoder cost a third of the gateway's throughput) and queued for export by `batch`. Of the SDK only its Resource is
used, to describe the service (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES). Nothing goes through OpenTelemetry's
global providers or context. Incoming and outgoing context is W3C trace context, parsed and written here.

Sampling is parent-based: a trace the caller sampled (or one that starts here) is recorded, one it did not sample
is not. Sample further in the collector.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, MutableMapping
from contextvars import Token
from typing import Any

from opentelemetry.sdk.resources import Resource

from sop_llm import __version__
from sop_llm.infra.redaction import Redactor
from sop_llm.infra.settings import Settings
from sop_llm.infra.telemetry.active import Attributes, SharedAttributes, request_trace
from sop_llm.infra.telemetry.batch import BatchSettings, SpanBatcher
from sop_llm.infra.telemetry.otlp import HAS_IS_REMOTE, IS_REMOTE, OTLPExporter, encode_scope, encode_span
from sop_llm.infra.trace import as_trace_id, parse_traceparent

INTERNAL, SERVER, CLIENT = 1, 2, 3  # OTLP span kinds
SAMPLED, RANDOM_TRACE_ID = 0x01, 0x02  # W3C trace flags


_random_bits = random.getrandbits
# The end of a traceparent by the span's flags: "-01" (sampled) and the like.
_FLAGS_SUFFIX = [f"-{flags:02x}" for flags in range(256)]


class Span:
    """One span; encoded and queued for export when it ends, if its trace is sampled. Ends once; changes after that
    are ignored."""

    __slots__ = (
        "attributes",
        "batcher",
        "end_ns",
        "error",
        "events",
        "flags",
        "kind",
        "message",
        "name",
        "parent_id",
        "shared",
        "span_id",
        "start_ns",
        "trace_hex",
        "trace_id",
    )

    def __init__(
        self,
        batcher: SpanBatcher,
        name: str,
        kind: int,
        trace_id: bytes,
        trace_hex: str,
        parent_id: bytes,
        flags: int,
        shared: SharedAttributes,
        attributes: dict[str, Any],
    ) -> None:
        self.batcher = batcher
        self.name = name
        self.kind = kind
        self.trace_id = trace_id  # 16 bytes
        self.trace_hex = trace_hex  # the id as 32 hex digits, made once per trace
        self.span_id = (_random_bits(64) or 1).to_bytes(8, "big")
        self.parent_id = parent_id  # 8 bytes, or empty for a root span
        self.flags = flags
        self.shared = shared
        self.attributes = attributes
        self.events: list[tuple[str, int, Mapping[str, Any] | None]] | None = None
        self.error = False
        self.message = ""
        self.start_ns = time.time_ns()
        self.end_ns = 0

    @property
    def recording(self) -> bool:
        return not self.end_ns and bool(self.flags & SAMPLED)

    @property
    def traceparent(self) -> str:
        return "00-" + self.trace_hex + "-" + self.span_id.hex() + _FLAGS_SUFFIX[self.flags & 0xFF]

    def set(self, attributes: Attributes) -> None:
        if not self.end_ns:
            self.attributes.update(attributes)

    def event(self, name: str, attributes: Attributes | None = None) -> None:
        if not self.end_ns:
            if self.events is None:
                self.events = []
            self.events.append((name, time.time_ns(), attributes))

    def fail(self, error_type: str, message: str = "") -> None:
        if not self.end_ns:
            self.attributes["error.type"] = error_type
            self.error, self.message = True, message

    def end(self) -> None:
        if not self.end_ns:
            self.end_ns = time.time_ns()
            if self.flags & SAMPLED:
                self.batcher.add(encode_span(self))


class RequestTrace:
    """The SERVER span of one HTTP request; `child` opens spans under it."""

    __slots__ = ("_token", "_tracing", "span")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self.span = span
        self._token: Token[Any] | None = request_trace.set(self)

    @property
    def capture_content(self) -> bool:
        return self._tracing.redactor is not None

    def redact(self, text: str) -> str:
        redactor = self._tracing.redactor
        return redactor.redact(text) if redactor is not None else text

    @property
    def traceparent(self) -> str:
        """The SERVER span as a W3C `traceparent`, returned to the caller in a response header of that name."""
        return self.span.traceparent

    def child(self, name: str, client: bool, attributes: Attributes, shared: SharedAttributes = ()) -> Span:
        parent = self.span
        flags = (parent.flags & 0xFF) | HAS_IS_REMOTE
        kind = CLIENT if client else INTERNAL
        trace, trace_hex = parent.trace_id, parent.trace_hex
        return Span(parent.batcher, name, kind, trace, trace_hex, parent.span_id, flags, shared, dict(attributes))

    def finish(self, method: str, route: str | None, status: int, error_type: str | None) -> None:
        """End the span once the response has gone: named after the route template when one matched, with the
        status, and `error.type` on a 5xx (the exception's class when one escaped, else the status)."""
        span = self.span
        attributes = span.attributes
        attributes["http.response.status_code"] = status
        if route is not None:
            span.name = f"{method} {route}"
            attributes["http.route"] = route
        if status >= 500:
            span.fail(error_type or str(status))
        span.end()
        if self._token is not None:
            request_trace.reset(self._token)
            # The token holds the request's context, which held this object: dropped, no cycle is left for the
            # garbage collector (one a request, measured at c64, slowed every request a few per cent).
            self._token = None


class Tracing:
    """The app's spans, exported in batches over OTLP/HTTP (protobuf)."""

    def __init__(self, settings: Settings) -> None:
        endpoint = settings.otel_exporter_otlp_traces_endpoint
        if endpoint is None:
            base = settings.otel_exporter_otlp_endpoint or "http://localhost:4318"
            endpoint = base.rstrip("/") + "/v1/traces"
        resource = Resource.create({"service.name": settings.otel_service_name, "service.version": __version__})
        self._exporter = OTLPExporter(endpoint, resource.attributes, encode_scope("sop_llm", __version__))
        self._batcher = SpanBatcher(self._exporter.export, BatchSettings.from_environment())
        self.redactor = Redactor(settings.request_log_redact) if settings.otel_capture_content else None

    def start_request(
        self, scope: MutableMapping[str, Any], trace_id: str, request_id: str | None, traceparent: str | None
    ) -> RequestTrace:
        """Open the SERVER span of an HTTP request: a child of the caller's `traceparent` when it sent a valid
        one, else the root of a trace whose id is the request's `trace_id` when that is a trace id (a caller's
        X-Request-ID may be anything), so the response header, the request log and the trace agree."""
        method = scope["method"]
        shared = (
            ("http.request.method", method),
            ("url.path", scope["path"]),
            ("url.scheme", scope.get("scheme", "http")),
        )
        attributes: dict[str, Any] = {}
        parent = parse_traceparent(traceparent) if traceparent is not None else None
        if parent is not None:
            trace_hex = f"{parent[0]:032x}"
            parent_id, flags = parent[1].to_bytes(8, "big"), (parent[2] & 0xFF) | HAS_IS_REMOTE | IS_REMOTE
        else:
            # The trace id this request goes by when it is one (made here when neither header came, so no need
            # to check it), else a new one.
            if request_id is None and traceparent is None:
                trace_hex, made_here = trace_id, True
            elif as_trace_id(trace_id) is not None:
                trace_hex, made_here = trace_id, request_id != trace_id
            else:
                trace_hex, made_here = f"{_random_bits(128) or 1:032x}", True
            # W3C level 2's random-trace-id flag: ids made here are random, a caller's X-Request-ID need not be.
            parent_id, flags = b"", SAMPLED | HAS_IS_REMOTE | (RANDOM_TRACE_ID if made_here else 0)
        trace = bytes.fromhex(trace_hex)
        span = Span(self._batcher, method, SERVER, trace, trace_hex, parent_id, flags, shared, attributes)
        if request_id == trace_id and trace_hex != trace_id:
            # The caller's own X-Request-ID, which the request log files the request under.
            attributes["http.request.header.x-request-id"] = [request_id]
        return RequestTrace(self, span)

    def start(self) -> None:
        """Start the export task (on the running event loop)."""
        self._batcher.start()

    async def aclose(self) -> None:
        """Export what is still queued, then stop."""
        await self._batcher.aclose()
        await self._exporter.aclose()

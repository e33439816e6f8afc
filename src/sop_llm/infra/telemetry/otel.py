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
from binascii import unhexlify
from collections.abc import Mapping, MutableMapping
from contextvars import Token
from typing import Any

from opentelemetry.sdk.resources import Resource

from sop_llm import __version__
from sop_llm.infra.redaction import Redactor
from sop_llm.infra.settings import Settings
from sop_llm.infra.telemetry.active import Attributes, SpanShape, request_trace
from sop_llm.infra.telemetry.batch import BatchSettings, SpanBatcher
from sop_llm.infra.telemetry.otlp import HAS_IS_REMOTE, IS_REMOTE, OTLPExporter, encode_scope, encode_span
from sop_llm.infra.trace import as_trace_id, parse_traceparent

INTERNAL, SERVER, CLIENT = 1, 2, 3  # OTLP span kinds
SAMPLED, RANDOM_TRACE_ID = 0x01, 0x02  # W3C trace flags


_random_bits = random.getrandbits
# The end of a traceparent by the span's flags: "01" (sampled) and the like.
_FLAGS_HEX = [f"{flags:02x}" for flags in range(256)]


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
        "parent_id",
        "shape",
        "span_id",
        "start_ns",
        "trace_hex",
        "trace_id",
    )

    def __init__(
        self,
        batcher: SpanBatcher,
        shape: SpanShape,
        kind: int,
        trace_id: bytes,
        trace_hex: str,
        parent_id: bytes,
        flags: int,
        attributes: dict[str, Any] | None,
    ) -> None:
        self.batcher = batcher
        self.shape = shape
        self.kind = kind
        self.trace_id = trace_id  # 16 bytes
        self.trace_hex = trace_hex  # the id as 32 hex digits, made once per trace
        self.span_id = (_random_bits(64) or 1).to_bytes(8, "big")
        self.parent_id = parent_id  # 8 bytes, or empty for a root span
        self.flags = flags
        self.attributes = attributes  # its own, beside its shape's
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
        return f"00-{self.trace_hex}-{self.span_id.hex()}-{_FLAGS_HEX[self.flags & 0xFF]}"

    def set(self, attributes: Attributes) -> None:
        if not self.end_ns:
            if self.attributes is None:
                self.attributes = dict(attributes)
            else:
                self.attributes.update(attributes)

    def reshape(self, shape: SpanShape) -> None:
        if not self.end_ns:
            self.shape = shape

    def event(self, name: str, attributes: Attributes | None = None) -> None:
        if not self.end_ns:
            if self.events is None:
                self.events = []
            self.events.append((name, time.time_ns(), attributes))

    def fail(self, error_type: str, message: str = "") -> None:
        if not self.end_ns:
            self.set({"error.type": error_type})
            self.error, self.message = True, message

    def end(self) -> None:
        if not self.end_ns:
            self.end_ns = time.time_ns()
            if self.flags & SAMPLED:
                self.batcher.add(encode_span(self))


class RequestTrace(Span):
    """The SERVER span of one HTTP request, current (in `active.request_trace`) until it finishes; `child` opens
    spans under it."""

    __slots__ = ("_token", "_tracing", "capture_content")

    def __init__(self, tracing: Tracing, trace_id: bytes, trace_hex: str, parent_id: bytes, flags: int) -> None:
        Span.__init__(self, tracing.batcher, _UNFINISHED, SERVER, trace_id, trace_hex, parent_id, flags, None)
        self._tracing = tracing
        self.capture_content = tracing.redactor is not None
        self._token: Token[Any] | None = request_trace.set(self)

    def redact(self, text: str) -> str:
        redactor = self._tracing.redactor
        return redactor.redact(text) if redactor is not None else text

    def child(self, shape: SpanShape, client: bool, attributes: dict[str, Any] | None = None) -> Span:
        flags = (self.flags & 0xFF) | HAS_IS_REMOTE
        kind = CLIENT if client else INTERNAL
        return Span(self.batcher, shape, kind, self.trace_id, self.trace_hex, self.span_id, flags, attributes)

    def finish(self, scope: Mapping[str, Any], route: str | None, status: int, error_type: str | None) -> None:
        """End the span once the response has gone: named after the route template when one matched, with the
        request's method, path and scheme, the status, and `error.type` on a 5xx (the exception's class when one
        escaped, else the status)."""
        self.shape = self._tracing.request_shape(
            scope["method"], scope["path"], scope.get("scheme", "http"), route, status
        )
        if status >= 500:
            self.fail(error_type or str(status))
        self.end()
        if self._token is not None:
            request_trace.reset(self._token)
            # The token holds the request's context, which held this object: dropped, no cycle is left for the
            # garbage collector (one a request, measured at c64, slowed every request a few per cent).
            self._token = None


# A SERVER span's shape until it finishes (it is encoded only then, with its route's shape).
_UNFINISHED = SpanShape("HTTP")


class Tracing:
    """The app's spans, exported in batches over OTLP/HTTP (protobuf)."""

    def __init__(self, settings: Settings) -> None:
        endpoint = settings.otel_exporter_otlp_traces_endpoint
        if endpoint is None:
            base = settings.otel_exporter_otlp_endpoint or "http://localhost:4318"
            endpoint = base.rstrip("/") + "/v1/traces"
        resource = Resource.create({"service.name": settings.otel_service_name, "service.version": __version__})
        self._exporter = OTLPExporter(endpoint, resource.attributes, encode_scope("sop_llm", __version__))
        self.batcher = SpanBatcher(self._exporter.export, BatchSettings.from_environment())
        self.redactor = Redactor(settings.request_log_redact) if settings.otel_capture_content else None
        # SERVER spans' shapes by method, path, scheme, route and status (emptied when full).
        self._shapes: dict[tuple[str, str, str, str | None, int], SpanShape] = {}

    def start_request(
        self, scope: MutableMapping[str, Any], trace_id: str, request_id: str | None, traceparent: str | None
    ) -> RequestTrace:
        """Open the SERVER span of an HTTP request: a child of the caller's `traceparent` when it sent a valid
        one, else the root of a trace whose id is the request's `trace_id` when that is a trace id (a caller's
        X-Request-ID may be anything), so the response header, the request log and the trace agree."""
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
        trace = RequestTrace(self, unhexlify(trace_hex), trace_hex, parent_id, flags)
        if request_id == trace_id and trace_hex != trace_id:
            # The caller's own X-Request-ID, which the request log files the request under.
            trace.attributes = {"http.request.header.x-request-id": [request_id]}
        return trace

    def request_shape(self, method: str, path: str, scheme: str, route: str | None, status: int) -> SpanShape:
        """A SERVER span's name (`POST /v1/chat/completions`, the method alone when no route matched) and its HTTP
        attributes, made once for all the requests that have them alike."""
        key = (method, path, scheme, route, status)
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= 4096:
                self._shapes.clear()
            pairs: list[tuple[str, Any]] = [
                ("http.request.method", method),
                ("url.path", path),
                ("url.scheme", scheme),
                ("http.response.status_code", status),
            ]
            if route is not None:
                pairs.append(("http.route", route))
            shape = self._shapes[key] = SpanShape(f"{method} {route}" if route is not None else method, pairs)
        return shape

    def start(self) -> None:
        """Start the export task (on the running event loop)."""
        self.batcher.start()

    async def aclose(self) -> None:
        """Export what is still queued, then stop."""
        await self.batcher.aclose()
        await self._exporter.aclose()

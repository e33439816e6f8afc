"""OpenTelemetry's SDK behind the service's traces. Imported only when tracing is on (see the package docstring).

The tracer provider is the app's own, not the process-global one: nothing else in the process exports through it,
and two apps in one process (tests) keep apart. The SDK reads the standard variables it knows itself: the
OTEL_BSP_* batch settings, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, …; the
endpoint and the service name come from Settings (so `.env` works too). Incoming and outgoing context is W3C trace
context only, parsed and written here (no propagator lookups per request).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import Token
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace import Span as OtelSpan

from sop_llm import __version__
from sop_llm.infra.redaction import Redactor
from sop_llm.infra.settings import Settings
from sop_llm.infra.telemetry.active import Attributes, request_trace
from sop_llm.infra.trace import as_trace_id, parse_traceparent


class _RequestIds(RandomIdGenerator):
    """Gives a span that starts a trace the id the request already goes by (its X-Request-ID), when that is a
    trace id, so the response header, the request log and the trace agree.

    `pending` (and whether it is random: ours are, a caller's need not be) is set just before `start_span`, which
    reads it at once, on the event loop's thread.
    """

    pending: int | None = None
    pending_random = True
    _last_random = True

    def generate_trace_id(self) -> int:
        pending, self.pending = self.pending, None
        self._last_random = self.pending_random if pending is not None else True
        return pending if pending is not None else super().generate_trace_id()

    def is_trace_id_random(self) -> bool:
        """Of the id just made: the W3C random-trace-id flag is set on it when true."""
        return self._last_random


def _traceparent(span: OtelSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


class Span:
    """An OpenTelemetry span behind the small `active.Span` interface; ends once."""

    __slots__ = ("_ended", "_span")

    def __init__(self, span: OtelSpan) -> None:
        self._span = span
        self._ended = False

    @property
    def recording(self) -> bool:
        return not self._ended and self._span.is_recording()

    @property
    def traceparent(self) -> str:
        return _traceparent(self._span)

    def set(self, attributes: Attributes) -> None:
        if self.recording:
            self._span.set_attributes(attributes)

    def event(self, name: str, attributes: Attributes | None = None) -> None:
        if self.recording:
            self._span.add_event(name, attributes)

    def fail(self, error_type: str, message: str = "") -> None:
        if self.recording:
            self._span.set_attribute("error.type", error_type)
            self._span.set_status(Status(StatusCode.ERROR, message or None))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._span.end()


class RequestTrace:
    """The SERVER span of one HTTP request; `child` opens spans under it."""

    __slots__ = ("_children", "_span", "_token", "_tracing")

    def __init__(self, tracing: Tracing, span: OtelSpan) -> None:
        self._tracing = tracing
        self._span = span
        self._children: Context | None = None
        self._token: Token[Any] = request_trace.set(self)

    @property
    def capture_content(self) -> bool:
        return self._tracing.redactor is not None

    def redact(self, text: str) -> str:
        redactor = self._tracing.redactor
        return redactor.redact(text) if redactor is not None else text

    @property
    def traceparent(self) -> str:
        """The SERVER span as a W3C `traceparent`, returned to the caller in a response header of that name."""
        return _traceparent(self._span)

    def child(self, name: str, client: bool, attributes: Attributes) -> Span:
        if self._children is None:
            self._children = set_span_in_context(self._span)
        kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
        return Span(self._tracing.tracer.start_span(name, self._children, kind, attributes))

    def finish(self, method: str, route: str | None, status: int, error_type: str | None) -> None:
        """End the span once the response has gone: named after the route template when one matched, with the
        status, and `error.type` on a 5xx (the exception's class when one escaped, else the status)."""
        span = self._span
        if span.is_recording():
            attributes: dict[str, str | int] = {"http.response.status_code": status}
            if route is not None:
                span.update_name(f"{method} {route}")
                attributes["http.route"] = route
            if status >= 500:
                attributes["error.type"] = error_type or str(status)
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)
        span.end()
        request_trace.reset(self._token)


class Tracing:
    """The app's tracer provider: one batch span processor exporting over OTLP/HTTP (protobuf)."""

    def __init__(self, settings: Settings) -> None:
        endpoint = settings.otel_exporter_otlp_traces_endpoint
        if endpoint is None and settings.otel_exporter_otlp_endpoint:
            endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        self._ids = _RequestIds()
        resource = Resource.create({"service.name": settings.otel_service_name, "service.version": __version__})
        self._provider = TracerProvider(resource=resource, id_generator=self._ids)
        # endpoint None: the exporter's own default (http://localhost:4318/v1/traces, or the variables').
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer = self._provider.get_tracer("sop_llm", __version__)
        self.redactor = Redactor(settings.request_log_redact) if settings.otel_capture_content else None

    def start_request(
        self, scope: MutableMapping[str, Any], trace_id: str, request_id: str | None, traceparent: str | None
    ) -> RequestTrace:
        """Open the SERVER span of an HTTP request: a child of the caller's `traceparent` when it sent a valid
        one, else the root of a trace whose id is the request's `trace_id` (when that is a trace id: a caller's
        X-Request-ID may be anything)."""
        parent = parse_traceparent(traceparent) if traceparent is not None else None
        context = None
        if parent is not None:
            remote = SpanContext(parent[0], parent[1], is_remote=True, trace_flags=TraceFlags(parent[2]))
            context = set_span_in_context(NonRecordingSpan(remote))
        else:
            self._ids.pending = as_trace_id(trace_id)
            self._ids.pending_random = request_id != trace_id
        method = scope["method"]
        attributes: dict[str, str | tuple[str, ...]] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        span = self.tracer.start_span(method, context, SpanKind.SERVER, attributes)
        self._ids.pending = None
        if request_id == trace_id and f"{span.get_span_context().trace_id:032x}" != trace_id:
            # The caller's own X-Request-ID, which the request log files the request under.
            span.set_attribute("http.request.header.x-request-id", (request_id,))
        return RequestTrace(self, span)

    def shutdown(self) -> None:
        """Export what is still queued, then stop the processor's thread (blocking: call it off the event loop)."""
        self._provider.shutdown()

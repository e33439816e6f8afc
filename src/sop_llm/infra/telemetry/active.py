"""The trace of the request in progress, as the code that opens spans under it sees it: `RequestTrace` and `Span`
are implemented in `otel` (imported only when tracing is on). None outside a traced request: tracing off, a
background task, a batch line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Protocol

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int] | Sequence[float]
Attributes = Mapping[str, AttributeValue]


class SpanShape:
    """What many spans have alike: their name and the attributes they share (a deployment's model, provider and
    limits; a route's method, path and status). Made once and kept by the code that opens such spans: the span
    writer encodes a shape on first use and keeps the result in `encoded`. A span's own attributes do not repeat a
    key of its shape."""

    __slots__ = ("encoded", "name", "pairs")

    def __init__(self, name: str, pairs: Iterable[tuple[str, AttributeValue]] = ()) -> None:
        self.name = name
        self.pairs = tuple(pairs)
        self.encoded: bytes | None = None


class Span(Protocol):
    """A span under the request's SERVER span."""

    @property
    def recording(self) -> bool:
        """False when the trace is not sampled: attributes would be dropped, so need not be computed."""

    @property
    def traceparent(self) -> str:
        """This span as a W3C `traceparent`, for a call it makes to another service."""

    def set(self, attributes: Attributes) -> None: ...

    def reshape(self, shape: SpanShape) -> None:
        """Give it another shape (its own with more attributes, say, once the answer is known)."""

    def event(self, name: str, attributes: Attributes | None = None) -> None: ...

    def fail(self, error_type: str, message: str = "") -> None:
        """Mark it failed: `error.type` and an error status."""

    def end(self) -> None:
        """End it (once; later calls do nothing)."""


class RequestTrace(Protocol):
    # Whether prompts and answers go into spans (OTEL_CAPTURE_CONTENT), passed through `redact` first.
    capture_content: bool

    def redact(self, text: str) -> str: ...

    def child(self, shape: SpanShape, client: bool, attributes: dict[str, AttributeValue] | None = None) -> Span:
        """A span under the request's, named and with the attributes of its shape, and its own `attributes` (the
        span keeps that dict: not to be changed after): CLIENT for a call to a remote service, INTERNAL for work
        in this process."""


request_trace: ContextVar[RequestTrace | None] = ContextVar("request_trace", default=None)


def current_request_trace() -> RequestTrace | None:
    return request_trace.get()

"""The trace of the request in progress, as the code that opens spans under it sees it: `RequestTrace` and `Span`
are implemented in `otel` (imported only when tracing is on). None outside a traced request: tracing off, a
background task, a batch line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Protocol

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int] | Sequence[float]
Attributes = Mapping[str, AttributeValue]
# Attributes that many spans have alike, as one tuple the caller keeps and passes again (from a cache): the span
# writer encodes each such tuple once. Each key's value has one type throughout, and the span does not set the key.
SharedAttributes = tuple[tuple[str, AttributeValue], ...]


class Span(Protocol):
    """A span under the request's SERVER span."""

    @property
    def recording(self) -> bool:
        """False when the trace is not sampled: attributes would be dropped, so need not be computed."""

    @property
    def traceparent(self) -> str:
        """This span as a W3C `traceparent`, for a call it makes to another service."""

    def set(self, attributes: Attributes) -> None: ...

    def event(self, name: str, attributes: Attributes | None = None) -> None: ...

    def fail(self, error_type: str, message: str = "") -> None:
        """Mark it failed: `error.type` and an error status."""

    def end(self) -> None:
        """End it (once; later calls do nothing)."""


class RequestTrace(Protocol):
    @property
    def capture_content(self) -> bool:
        """Whether prompts and answers go into spans (OTEL_CAPTURE_CONTENT), passed through `redact` first."""

    def redact(self, text: str) -> str: ...

    def child(self, name: str, client: bool, attributes: Attributes, shared: SharedAttributes = ()) -> Span:
        """A span under the request's: CLIENT for a call to a remote service, INTERNAL for work in this process;
        its attributes are `shared` and `attributes`."""


request_trace: ContextVar[RequestTrace | None] = ContextVar("request_trace", default=None)


def current_request_trace() -> RequestTrace | None:
    return request_trace.get()

"""Per-request trace id, carried in a context variable so logs and error bodies can name it."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

_trace_id: ContextVar[str] = ContextVar("trace_id", default="-")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def current_trace_id() -> str:
    return _trace_id.get()


def set_trace_id(value: str) -> None:
    _trace_id.set(value)


def new_trace_id() -> str:
    """128 random bits as hex. Request ids need uniqueness, not secrecy: no system call on every request."""
    return f"{random.getrandbits(128):032x}"


def trace_id_from_headers(request_id: str | None, traceparent: str | None) -> str:
    """Take the caller's `X-Request-ID`, else the trace id of a W3C `traceparent`, else a new id."""
    if request_id and _SAFE_ID.match(request_id):
        return request_id
    if traceparent:
        parts = traceparent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            return parts[1]
    return new_trace_id()

"""Per-request trace id, carried in a context variable so logs and error bodies can name it; and the W3C
`traceparent` a remote provider passes upstream while tracing is on."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar, Token

_trace_id: ContextVar[str] = ContextVar("trace_id", default="-")
_outgoing: ContextVar[str | None] = ContextVar("outgoing_traceparent", default=None)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


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


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """(trace id, parent span id, trace flags) of a valid W3C `traceparent`, else None.

    Version `ff` and all-zero ids are invalid; a later version may append fields after the flags.
    """
    match = _TRACEPARENT.match(value.strip())
    if match is None:
        return None
    version, trace, span, flags = match.groups()
    rest = value.strip()[match.end() :]
    if version == "ff" or (version == "00" and rest) or (rest and not rest.startswith("-")):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags, 16)


def as_trace_id(value: str) -> int | None:
    """`value` as a 128-bit trace id when it is one (32 lowercase hex digits, not all zero), else None."""
    if len(value) != 32 or not _TRACE_ID.fullmatch(value):
        return None
    return int(value, 16) or None


def outgoing_traceparent() -> str | None:
    """The `traceparent` a remote provider sends with the call in progress; None while tracing is off."""
    return _outgoing.get()


def set_outgoing_traceparent(value: str) -> Token[str | None]:
    """Set by the provider span for the length of one call; hand the token back to `reset_outgoing_traceparent`."""
    return _outgoing.set(value)


def reset_outgoing_traceparent(token: Token[str | None]) -> None:
    """Undo `set_outgoing_traceparent`. A stream closed from another task than the one that began it cannot reset
    the variable of the first; that task's next provider call sets its own value anyway."""
    # On every provider call: contextlib.suppress would make an object and call it twice.
    try:  # noqa: SIM105
        _outgoing.reset(token)
    except ValueError:
        pass

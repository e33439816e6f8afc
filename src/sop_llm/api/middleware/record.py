"""Opens the record of every request (services/usage/record.py) and, when the answer has been sent — the whole
stream, for a stream — hands it on: the tokens it used to the caller's token rate limit; for a POST one request,
its tokens, its latency and whether it failed to the caller's usage tally for that model and day (a POST that never
reached a model counts only when it failed, as model `-`, so a caller's rejected requests show too); and to the
request log every request but a successful read (GET, HEAD, OPTIONS), with the request and answer bodies when
REQUEST_LOG=full."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sop_llm.api.errors import surface_of
from sop_llm.api.request_state import caller_key, route_template
from sop_llm.infra.trace import current_trace_id
from sop_llm.services.auth.principal import Principal
from sop_llm.services.limits.rate_limit import RateLimiter
from sop_llm.services.logs.writer import Entry, RequestLog
from sop_llm.services.routing.served import served_by
from sop_llm.services.usage.meter import ANONYMOUS_SUBJECT, UsageMeter
from sop_llm.services.usage.record import RequestRecord, opened

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# Requests whose bodies are credentials (a console sign-in) or a new key: never kept, whatever the redaction.
_SECRET_BODIES = frozenset({"/console/session", "/api/v1/admin/keys"})


class _Bodies:
    """The first `limit` bytes of the request and of the answer (REQUEST_LOG=full)."""

    __slots__ = ("answer", "limit", "request")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.request = bytearray()
        self.answer = bytearray()

    @staticmethod
    def keep(into: bytearray, chunk: bytes, limit: int) -> None:
        if len(into) < limit:
            into += chunk[: limit - len(into)]

    @staticmethod
    def text(kept: bytearray) -> str | None:
        return kept.decode("utf-8", "replace") if kept else None


class RecordMiddleware:
    def __init__(
        self, app: ASGIApp, meter: UsageMeter | None, limiter: RateLimiter | None, log: RequestLog | None = None
    ) -> None:
        """`meter`: the usage tally (None: usage is not counted); `limiter`: token rate limits (None: none);
        `log`: the request log (None: REQUEST_LOG=off)."""
        self.app = app
        self.meter = meter
        self.limiter = limiter
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        principal: Principal | None = scope.get("state", {}).get("principal")
        arrived = time.time()
        started = time.perf_counter()
        status = 500
        keep = self.log is not None and self.log.bodies and scope["path"] not in _SECRET_BODIES
        bodies = _Bodies(self.log.body_limit) if keep and self.log is not None else None

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif bodies is not None and message["type"] == "http.response.body":
                bodies.keep(bodies.answer, message.get("body", b""), bodies.limit)
            await send(message)

        async def receive_and_keep() -> Message:
            message = await receive()
            if bodies is not None and message["type"] == "http.request":
                bodies.keep(bodies.request, message.get("body", b""), bodies.limit)
            return message

        with opened(principal.subject if principal is not None else None) as record:
            try:
                await self.app(scope, receive if bodies is None else receive_and_keep, send_and_watch)
            finally:
                seconds = time.perf_counter() - started
                if self.meter is not None and scope["method"] == "POST":
                    self.meter.record_request(record, status >= 400, seconds)
                if self.limiter is not None and record.total_tokens:
                    await self.limiter.charge_tokens(caller_key(scope), record.total_tokens)
                if self.log is not None and (status >= 400 or scope["method"] not in _READS):
                    self.log.add(_entry(scope, record, status, arrived, started, seconds, bodies))


def _entry(
    scope: Scope,
    record: RequestRecord,
    status: int,
    arrived: float,
    started: float,
    seconds: float,
    bodies: _Bodies | None,
) -> Entry:
    path: str = scope["path"]
    return Entry(
        arrived,
        record.subject or ANONYMOUS_SUBJECT,
        surface_of(path),
        scope["method"][:8],
        route_template(scope) or path[:200],
        record.model,
        served_by(),
        status,
        record.error_code if status >= 400 or record.failed else None,
        record.prompt_tokens,
        record.completion_tokens,
        seconds * 1000,
        None if record.first_token is None else (record.first_token - started) * 1000,
        current_trace_id(),
        None if bodies is None else bodies.text(bodies.request),
        None if bodies is None else bodies.text(bodies.answer),
    )

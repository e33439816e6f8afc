"""Opens the record of every request (services/usage/record.py) and, when the answer has been sent — the whole
stream, for a stream — hands it on: the tokens it used to the caller's token rate limit, and for a POST one request,
its tokens, its latency and whether it failed to the caller's usage tally for that model and day. A POST that never
reached a model counts only when it failed (as model `-`), so a caller's rejected requests show too."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sop_llm.api.request_state import caller_key
from sop_llm.services.auth.principal import Principal
from sop_llm.services.limits.rate_limit import RateLimiter
from sop_llm.services.usage.meter import UsageMeter
from sop_llm.services.usage.record import opened


class RecordMiddleware:
    def __init__(self, app: ASGIApp, meter: UsageMeter | None, limiter: RateLimiter | None) -> None:
        """`meter`: the usage tally (None: usage is not counted); `limiter`: token rate limits (None: none)."""
        self.app = app
        self.meter = meter
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        principal: Principal | None = scope.get("state", {}).get("principal")
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with opened(principal.subject if principal is not None else None) as record:
            try:
                await self.app(scope, receive, send_and_watch)
            finally:
                if self.meter is not None and scope["method"] == "POST":
                    self.meter.record_request(record, status >= 400, time.perf_counter() - started)
                if self.limiter is not None and record.total_tokens:
                    await self.limiter.charge_tokens(caller_key(scope), record.total_tokens)

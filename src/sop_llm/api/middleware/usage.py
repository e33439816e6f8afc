"""Usage accounting on every POST: the code that runs a model notes which model and how many tokens
(services/usage/meter.py); when the answer has been sent — the whole stream, for a stream — one request, its
tokens, its latency and whether it failed are added to the caller's tally for that model and day. A POST that never
reached a model counts only when it failed (as model `-`), so a caller's rejected requests show too."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sop_llm.services.auth.principal import Principal
from sop_llm.services.usage.meter import UsageMeter, begin_request, end_request


class UsageMiddleware:
    def __init__(self, app: ASGIApp, meter: UsageMeter) -> None:
        self.app = app
        self.meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        usage, token = begin_request()
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            end_request(token)
            principal: Principal | None = scope.get("state", {}).get("principal")
            subject = principal.subject if principal is not None else None
            self.meter.record_request(subject, usage, status >= 400, time.perf_counter() - started)

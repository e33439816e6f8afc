"""Rate limits on every route but liveness, readiness and the docs: keyed by the caller (API key or token subject),
or by client IP with auth off. A refusal is a 429 with `Retry-After`; every limited answer carries
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds). The tokens a request used are
charged after the answer, from its record (record.py in this folder)."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sop_llm.api.errors import error_response
from sop_llm.api.middleware.auth import METRICS_PATHS, PUBLIC_PATHS
from sop_llm.api.request_state import caller_key
from sop_llm.infra.errors import AppError, RateLimitedError
from sop_llm.services.limits.rate_limit import Decision, RateLimiter

_UNLIMITED = PUBLIC_PATHS | METRICS_PATHS


def _headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit", str(decision.limit).encode()),
        (b"x-ratelimit-remaining", str(decision.remaining).encode()),
        (b"x-ratelimit-reset", str(math.ceil(decision.reset_after)).encode()),
    ]


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNLIMITED or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        caller = caller_key(scope)
        try:
            decision = await self.limiter.admit(caller)
        except AppError as exc:  # Redis down with RATE_LIMIT_REDIS_DOWN=closed
            await error_response(Request(scope, receive), exc)(scope, receive, send)
            return
        if decision is not None and not decision.allowed:
            retry = max(1, math.ceil(decision.reset_after))
            error = RateLimitedError(
                f"rate limit: {decision.limit} {decision.what} per minute for this caller; retry in {retry} s",
                retry_after=retry,
                details={"limit": decision.limit, "per": "minute", "what": decision.what},
            )
            response = error_response(Request(scope, receive), error)
            response.raw_headers.extend(_headers(decision))
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and decision is not None:
                message["headers"] = [*message.get("headers", ()), *_headers(decision)]
            await send(message)

        await self.app(scope, receive, send_with_headers)

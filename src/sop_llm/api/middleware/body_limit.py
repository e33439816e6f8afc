"""The request body cap, enforced while the body arrives: a declared Content-Length over the cap is refused
before a byte is read, and a body without one (chunked) is cut off as soon as it passes the cap, so nothing larger
than the cap is ever buffered or parsed. Either way the answer is a 413 in the surface's error shape; whatever the
route made of its cut-off body is discarded."""

from __future__ import annotations

import contextlib

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sop_llm.api.errors import error_response
from sop_llm.infra.errors import PayloadTooLargeError


class _BodyTooLarge(Exception):
    """Raised into the route reading the body; the middleware answers instead of it."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        """`larger`: paths allowed a larger body than `limit` (file uploads), each with its own cap."""
        self.app = app
        self.limit = limit
        self.larger = larger or {}

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        setting = "FILES_MAX_BYTES" if scope["path"] in self.larger else "MAX_REQUEST_BODY_BYTES"
        error = PayloadTooLargeError(
            f"request body larger than {limit} bytes ({setting}); send less per request",
            details={"limit_bytes": limit},
        )
        await error_response(Request(scope, receive), error)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.limit)
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        if declared.isdigit():
            if int(declared) > limit:
                await self._refuse(scope, receive, send, limit)
            else:  # the HTTP server never delivers more than a declared length: nothing to count
                await self.app(scope, receive, send)
            return
        received = 0
        overflow = False

        async def limited_receive() -> Message:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if not overflow:
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if overflow:
            await self._refuse(scope, receive, send, limit)

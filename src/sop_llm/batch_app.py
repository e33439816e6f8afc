"""The app batch lines go through, the second app factory beside app.py (the API's and the worker's processes
build it): batch lines go through the same routes as HTTP requests, in process — a small ASGI app holding the
batchable OpenAI routes over the same services, called with a request built in memory. A line therefore gets
exactly the answer (status and body) the endpoint would have given, is charged to the batch owner's budgets, and
counts in their usage as one request."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import Message

from sop_llm.api.errors import install_error_handlers
from sop_llm.api.middleware.record import RecordMiddleware
from sop_llm.api.openai import chat, embeddings
from sop_llm.api.openai.responses import routes as responses
from sop_llm.services.auth.principal import ANONYMOUS, Principal
from sop_llm.services.container import Services


class InProcessCaller:
    def __init__(self, services: Services) -> None:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        app.state.services = services
        for module in (chat, embeddings, responses):
            app.include_router(module.router, prefix="/v1")
        install_error_handlers(app)
        # Lines are not rate limited (the batch is, when it is created); each is counted as a request.
        app.add_middleware(
            RecordMiddleware, meter=services.usage if services.settings.usage_enabled else None, limiter=None
        )
        self._app = app

    async def __call__(self, owner: str | None, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
        payload = orjson.dumps(body)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": url,
            "raw_path": url.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            "client": ("batch", 0),
            "server": ("batch", 0),
            "state": {"principal": ANONYMOUS if owner is None else Principal(owner, "user")},
        }
        delivered = False
        status = 500
        parts: list[bytes] = []

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await asyncio.Future()  # the "client" never goes away; the line's task is cancelled instead
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        await self._app(scope, receive, send)
        raw = b"".join(parts)
        answer = orjson.loads(raw) if raw else {}
        if not isinstance(answer, dict):
            answer = {"data": answer}
        request_id = answer.get("id")
        return status, answer, request_id if isinstance(request_id, str) else f"req_{secrets.token_hex(12)}"

"""The hottest routes, answered ahead of the framework's own layers.

A gateway request through FastAPI passes its server-error, telemetry and body-limit layers, then the exception
layer, an exit stack, route matching over every route and two request/response wrappers, before our handler runs;
measured under load, that was a good part of the time the service adds to a request. For the few routes clients hit
the most, `HotPaths` builds a second chain of the same middleware classes (trace id and metrics, body cap, CORS,
auth, rate limits, usage) around the handler itself and sends matching requests straight into it. Errors leave
through the same exception handlers as everywhere else, and the routes keep their FastAPI declarations for /docs.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


class _Endpoint:
    def __init__(self, path: str, endpoint: Endpoint, handlers: Mapping[Any, Handler]) -> None:
        self.route = Route(path, endpoint, methods=["POST"])  # what metrics label the request with
        self.endpoint = endpoint
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = next((self.handlers[cls] for cls in type(exc).__mro__ if cls in self.handlers), None)
            if handler is None:
                raise  # a bug: TraceMiddleware answers it as every unexpected error
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)


class HotPaths:
    """`POST <path>` → its handler inside a chain built from `middleware` (outermost first, as the app's own)."""

    def __init__(
        self,
        routes: Mapping[str, Endpoint],
        middleware: list[Any],
        handlers: Mapping[Any, Handler],
    ) -> None:
        self._chains: dict[str, ASGIApp] = {}
        for path, endpoint in routes.items():
            chain: ASGIApp = _Endpoint(path, endpoint, handlers)
            for entry in reversed(middleware):
                chain = entry.cls(chain, *entry.args, **entry.kwargs)
            self._chains[path] = chain

    def chain_for(self, scope: Scope) -> ASGIApp | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        return self._chains.get(scope["path"])

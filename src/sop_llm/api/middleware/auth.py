"""Authentication on every route but liveness, readiness and the API docs: the principal lands in
`request.state.principal`; a missing or bad credential is a 401 in the surface's error shape."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sop_llm.api.errors import error_response
from sop_llm.infra.errors import AppError, ForbiddenError
from sop_llm.services.auth.authenticator import Authenticator
from sop_llm.services.auth.principal import ANONYMOUS, Principal

# The dashboard page is static; the data it draws comes over the (authenticated) WebSocket. /metrics carries no
# secrets and Prometheus scrapes it without credentials: keep it on the internal network.
PUBLIC_PATHS = frozenset(
    {
        "/api/v1/health",
        "/api/v1/health/ready",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
        "/metrics",
        "/dashboard",
    }
)


def _credential(scope: Scope) -> str | None:
    """From `Authorization: Bearer …` or `X-API-Key`; a WebSocket from a browser (which cannot set headers) may
    send `?token=…` instead."""
    api_key: str | None = None
    if scope["type"] == "websocket":
        from urllib.parse import parse_qs

        tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or []
        if tokens:
            api_key = tokens[0]
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = str(value.decode("latin-1")).partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip()
    return api_key


class AuthMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.authenticator.authenticate(_credential(scope))
        except AppError as exc:
            if scope["type"] != "http":
                return  # a websocket closes unanswered
            response = error_response(Request(scope, receive), exc)
            if exc.status_code == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def caller_key(scope: Scope) -> str:
    """Whose budget and whose cache: the key or token subject, or the client IP with auth off."""
    principal: Principal | None = scope.get("state", {}).get("principal")
    if principal is not None and principal.subject is not None:
        return principal.subject
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


def principal_of(request: Request) -> Principal:
    principal: Principal = getattr(request.state, "principal", ANONYMOUS)
    return principal


async def require_admin(request: Request) -> Principal:
    principal = principal_of(request)
    if not principal.admin:
        raise ForbiddenError("this needs an admin API key or a token with the admin scope")
    return principal

"""Authentication on every route but liveness, readiness, Ollama's version route, the API docs, the dashboard page
and the console's pages and sign-in: the principal lands in `request.state.principal` (read through
api/request_state.py); a missing or bad credential is a 401 in the surface's error shape (a WebSocket is closed with
4401, or 4403 without the admin scope). `/metrics` and the monitoring feed need the admin scope unless METRICS_PUBLIC
makes them public.

A request with neither `Authorization` nor `X-API-Key` may carry the console's session cookie instead. A browser
sends that cookie on its own, so a cookie alone never changes anything: POST, PUT, PATCH and DELETE also need the
session's CSRF token in `X-CSRF-Token`, and are refused when their `Origin` names another host."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sop_llm.api.console.cookie import check_change, session_token
from sop_llm.api.errors import error_response
from sop_llm.infra.errors import AppError, AuthenticationError, ForbiddenError
from sop_llm.services.auth.authenticator import Authenticator
from sop_llm.services.auth.principal import Principal
from sop_llm.services.auth.sessions import Sessions

# Liveness, readiness, Ollama's version check (what its clients probe a server with), the API docs and the
# dashboard page (static: its data comes over the WebSocket) are public.
PUBLIC_PATHS = frozenset(
    {
        "/api/v1/health",
        "/api/v1/health/ready",
        "/api/version",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
        "/dashboard",
    }
)
# The console's pages and static files hold no data; /console/session checks its cookie itself.
CONSOLE_PREFIX = "/console"
# What the service knows about its traffic: public with METRICS_PUBLIC, otherwise for admins only.
METRICS_PATHS = frozenset({"/metrics", "/api/v1/monitoring/ws"})
# Beside the dashboard's WebSocket subprotocol (api/native/monitoring.py), a client may offer `bearer.<key or JWT>`.
_WS_BEARER = "bearer."


def _credential(scope: Scope) -> str | None:
    """From `Authorization: Bearer …` or `X-API-Key`; a WebSocket may offer `bearer.<credential>` as a subprotocol
    instead (a browser cannot set headers on it). Never from the URL."""
    api_key: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = str(value.decode("latin-1")).partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip()
    if api_key is None and scope["type"] == "websocket":
        for protocol in scope.get("subprotocols", ()):
            if protocol.startswith(_WS_BEARER) and len(protocol) > len(_WS_BEARER):
                return str(protocol[len(_WS_BEARER) :])
    return api_key


def _ticket(scope: Scope) -> str | None:
    from urllib.parse import parse_qs

    tickets = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ticket") or []
    return tickets[0] if tickets else None


def _public_console(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, authenticator: Authenticator, sessions: Sessions, metrics_public: bool = False
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.sessions = sessions
        self.public = PUBLIC_PATHS | METRICS_PATHS if metrics_public else PUBLIC_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.public or _public_console(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._principal(scope)
            if scope["path"] in METRICS_PATHS and not principal.admin:
                raise ForbiddenError("monitoring data needs an admin API key or a token with the admin scope")
        except AppError as exc:
            if scope["type"] != "http":
                await send({"type": "websocket.close", "code": 4401 if exc.status_code == 401 else 4403})
                return
            response = error_response(Request(scope, receive), exc)
            if exc.status_code == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope) -> Principal:
        credential = _credential(scope)
        if credential is None and scope["type"] == "websocket" and (ticket := _ticket(scope)) is not None:
            principal = await self.authenticator.tickets.redeem(ticket)
            if principal is None:
                raise AuthenticationError("unknown, used or expired ticket; ask POST /api/v1/monitoring/ticket again")
            return principal
        if credential is None and scope["type"] == "http" and (token := session_token(Headers(scope=scope))):
            return await self._session_principal(scope, token)
        return await self.authenticator.authenticate(credential)

    async def _session_principal(self, scope: Scope, token: str) -> Principal:
        """The console's caller, by its session cookie (WebSockets use tickets, never the cookie)."""
        session = await self.sessions.find(token)
        if session is None:
            raise AuthenticationError("the console session has ended (signed out or expired); sign in again")
        check_change(session, scope["method"], Headers(scope=scope))
        return session.principal

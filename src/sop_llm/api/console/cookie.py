"""The console's session cookie and the checks a cookie-authenticated request must pass. A browser attaches the
cookie by itself, even to a request another site's page makes it send; so a request that changes something (any
method but GET, HEAD and OPTIONS) must also show the session's CSRF token, which only the console's own pages can
read, and must not come from a page of another origin. The auth middleware and the session routes both use these."""

from __future__ import annotations

import secrets

from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from sop_llm.infra.errors import ForbiddenError
from sop_llm.services.auth.sessions import Session

SESSION_COOKIE = "sop_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_token(headers: Headers) -> str | None:
    cookies = headers.get("cookie")
    if not cookies:
        return None
    return cookie_parser(cookies).get(SESSION_COOKIE) or None


def request_scheme(headers: Headers, scheme: str) -> str:
    """`https` when the request came over HTTPS, to this process or to a proxy in front (`X-Forwarded-Proto`)."""
    forwarded = headers.get("x-forwarded-proto")
    if forwarded:
        return forwarded.split(",")[0].strip().lower()
    return scheme.lower()


def foreign_origin(headers: Headers) -> bool:
    """Whether the `Origin` header names another host than the one the request was sent to (`Host`, or the
    `X-Forwarded-Host` a proxy in front sets). The scheme is not compared: a proxy that ends TLS turns https into
    http. Without the header (a same-origin GET, a client that is not a browser) there is nothing to compare."""
    origin = headers.get("origin")
    if origin is None:
        return False
    scheme_part, separator, host = origin.strip().lower().partition("://")
    if not separator or scheme_part not in ("http", "https") or not host:
        return True  # "null" (a sandboxed frame, a file) or anything odd
    ours = {headers.get("host", "").lower()}
    forwarded = headers.get("x-forwarded-host")
    if forwarded:
        ours.add(forwarded.split(",")[0].strip().lower())
    return host not in ours


def check_change(session: Session, method: str, headers: Headers) -> None:
    """Refuse a cookie-authenticated change that could come from another site (403)."""
    if method.upper() in SAFE_METHODS:
        return
    if foreign_origin(headers):
        raise ForbiddenError("refused: this request comes from a page of another origin (Origin header)")
    token = headers.get(CSRF_HEADER)
    if not token or not secrets.compare_digest(token.encode(), session.csrf_token.encode()):
        raise ForbiddenError(
            f"refused: a request signed in by the console's session cookie must send the session's CSRF token in "
            f"{CSRF_HEADER} (GET /console/session tells it)"
        )

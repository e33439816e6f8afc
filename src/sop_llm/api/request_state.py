"""What the middleware leave on a request for the routes: the caller that auth found (`principal_of`, `caller_key`,
`require_admin`). What the routes leave for the middleware is the request's record (services/usage/record.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Scope

from sop_llm.infra.errors import ForbiddenError
from sop_llm.services.auth.principal import ANONYMOUS, Principal


def principal_of(request: Request) -> Principal:
    principal: Principal = getattr(request.state, "principal", ANONYMOUS)
    return principal


def caller_key(scope: Scope) -> str:
    """Whose budget and whose cache: the key or token subject, or the client IP with auth off."""
    principal: Principal | None = scope.get("state", {}).get("principal")
    if principal is not None and principal.subject is not None:
        return principal.subject
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


async def require_admin(request: Request) -> Principal:
    principal = principal_of(request)
    if not principal.admin:
        raise ForbiddenError("this needs an admin API key or a token with the admin scope")
    return principal

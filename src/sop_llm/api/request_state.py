"""What the middleware leave on a request for the routes: the caller that auth found (`principal_of`, `caller_key`,
`require_admin`), and the whole template of the route it matched (`route_template`). What the routes leave for the
middleware is the request's record (services/usage/record.py)."""

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


def route_template(scope: Scope) -> str | None:
    """The matched route's path template, whole (`/api/v1/tasks/{task_id}`); None when no route matched. A route
    of an included router knows only its own part of the path (`/tasks/{task_id}`), not the prefix it was included
    under, so the prefix is read off the request's path: the part before what the route's pattern matches. Kept in
    the scope once found, for the next middleware that asks (the request log, then the metrics and the trace)."""
    if _KEPT in scope:
        kept: str | None = scope[_KEPT]
        return kept
    scope[_KEPT] = template = _route_template(scope)
    return template


_KEPT = "sop_llm.route_template"


def _route_template(scope: Scope) -> str | None:
    route = scope.get("route")
    template: str | None = getattr(route, "path", None)
    pattern = getattr(route, "path_regex", None)
    path: str = scope["path"]
    if template is None or pattern is None or pattern.match(path):
        return template
    cut = path.find("/", 1)
    while cut != -1:
        if pattern.match(path[cut:]):
            return path[:cut] + template
        cut = path.find("/", cut + 1)
    return template

"""What the middleware leave on a request for the routes, and what the routes leave for the middleware: the caller
that auth found (`principal_of`, `caller_key`, `require_admin`), and the tokens a generation used, which the rate
limiter charges to the caller once the answer is sent (`record_tokens`)."""

from __future__ import annotations

from contextvars import ContextVar, Token

from starlette.requests import Request
from starlette.types import Scope

from sop_llm.infra.errors import ForbiddenError
from sop_llm.services.auth.principal import ANONYMOUS, Principal

_tokens_used: ContextVar[list[int] | None] = ContextVar("tokens_used", default=None)


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


def record_tokens(count: int) -> None:
    """Called by the generation code: the tokens this request used, charged to its caller when it ends."""
    holder = _tokens_used.get()
    if holder is not None:
        holder.append(count)


def begin_token_count() -> tuple[list[int], Token[list[int] | None]]:
    """For the rate limiter, around one request: what `record_tokens` reports lands in the list."""
    used: list[int] = []
    return used, _tokens_used.set(used)


def end_token_count(token: Token[list[int] | None]) -> None:
    _tokens_used.reset(token)

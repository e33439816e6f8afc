"""Single-use WebSocket tickets. A browser cannot set headers on a WebSocket, and a key in the URL ends up in proxy
logs; so the page asks `POST /api/v1/monitoring/ticket` (with its key in a header) for a ticket that is good for one
connection within TICKET_SECONDS, and opens the socket with `?ticket=…`. Tickets live in the cache (Redis with
REDIS_URL, so any replica can redeem one), stored under a hash of themselves."""

from __future__ import annotations

import secrets

from sop_llm.infra.cache import Cache
from sop_llm.infra.redis_keys import ticket_key
from sop_llm.services.auth.principal import SCOPES, Principal

TICKET_SECONDS = 30
_SEPARATOR = "\x1f"


class Tickets:
    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def issue(self, principal: Principal) -> str:
        ticket = secrets.token_urlsafe(32)
        value = f"{principal.subject or ''}{_SEPARATOR}{principal.scope}".encode()
        await self._cache.set(ticket_key(ticket), value, ttl=TICKET_SECONDS)
        return ticket

    async def redeem(self, ticket: str) -> Principal | None:
        """The principal the ticket was issued to; None when it is unknown, used or expired."""
        value = await self._cache.take(ticket_key(ticket))
        if value is None:
            return None
        subject, _, scope = value.decode().partition(_SEPARATOR)
        if scope not in SCOPES:
            return None
        return Principal(subject=subject or None, scope=scope)

"""Browser sessions for the admin console. Signing in trades an API key or JWT for a random token that the browser
keeps in an HttpOnly cookie; the server keeps, under a hash of that token, who signed in and the session's CSRF
token, for CONSOLE_SESSION_HOURS or until sign-out. They live in Redis when REDIS_URL is set, so every replica knows
every session; otherwise in this process's memory, apart from the shared cache so that busy caches never push a
session out."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import orjson

from sop_llm.infra.cache import Cache
from sop_llm.infra.redis_keys import NAMESPACE
from sop_llm.services.auth.principal import SCOPES, Principal

SESSION_PREFIX = f"{NAMESPACE}:console:"


def session_key(token: str) -> str:
    return SESSION_PREFIX + hashlib.blake2b(token.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf_token: str


class Sessions:
    def __init__(self, cache: Cache, hours: float) -> None:
        self._cache = cache
        self.seconds = max(1, round(hours * 3600))

    async def open(self, principal: Principal) -> tuple[str, Session]:
        """A new session for this principal, and the token its cookie carries (kept nowhere else)."""
        token = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32))
        value = {"subject": principal.subject, "scope": principal.scope, "csrf": session.csrf_token}
        await self._cache.set(session_key(token), orjson.dumps(value), ttl=self.seconds)
        return token, session

    async def find(self, token: str) -> Session | None:
        """The session this token opened; None when it is unknown, expired or signed out."""
        value = await self._cache.get(session_key(token))
        if value is None:
            return None
        stored = orjson.loads(value)
        scope = stored.get("scope")
        if scope not in SCOPES:
            return None
        return Session(Principal(subject=stored.get("subject"), scope=scope), str(stored.get("csrf")))

    async def close(self, token: str) -> None:
        await self._cache.take(session_key(token))

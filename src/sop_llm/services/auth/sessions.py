"""Browser sessions for the admin console. Signing in trades an API key or JWT for a random token that the browser
keeps in an HttpOnly cookie; the server keeps, under a hash of that token, who signed in and the session's CSRF
token, for CONSOLE_SESSION_HOURS or until sign-out. They live in Redis when REDIS_URL is set, so every replica knows
every session; otherwise in this process's memory, apart from the shared cache so that busy caches never push a
session out.

A session opened with an API key ends when that key is revoked: the key is looked up again at most every
API_KEY_CACHE_SECONDS, as a key sent in a header is. A session opened with a JWT ends when the token expires, if
that comes before CONSOLE_SESSION_HOURS."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt
import orjson
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.cache import Cache
from sop_llm.infra.errors import ServiceUnavailableError
from sop_llm.infra.redis_keys import console_session_key
from sop_llm.services.auth.keys import KEY_PREFIX
from sop_llm.services.auth.model import ApiKeyRow
from sop_llm.services.auth.principal import SCOPES, Principal

_KEY_SUBJECT = "key:"


def token_expiry(credential: str) -> float | None:
    """When a JWT expires (its `exp`, a Unix time), read from a token already verified; None for an API key."""
    if credential.startswith(KEY_PREFIX):
        return None
    try:
        expiry = jwt.decode(credential, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(expiry) if isinstance(expiry, int | float) else None


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf_token: str


class Sessions:
    def __init__(
        self, cache: Cache, hours: float, database: async_sessionmaker[AsyncSession], key_check_seconds: float
    ) -> None:
        self._cache = cache
        self.seconds = max(1, round(hours * 3600))
        self._database = database
        self._key_check_seconds = key_check_seconds
        self._keys_checked: dict[str, tuple[float, bool]] = {}

    def lifetime(self, expires_at: float | None) -> int:
        """How many seconds a session lasts: CONSOLE_SESSION_HOURS, or less when its credential expires sooner."""
        if expires_at is None:
            return self.seconds
        return max(1, min(self.seconds, int(expires_at - time.time())))

    async def open(self, principal: Principal, seconds: int) -> tuple[str, Session]:
        """A new session for this principal, and the token its cookie carries (kept nowhere else)."""
        token = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32))
        value = {"subject": principal.subject, "scope": principal.scope, "csrf": session.csrf_token}
        await self._cache.set(console_session_key(token), orjson.dumps(value), ttl=seconds)
        return token, session

    async def find(self, token: str) -> Session | None:
        """The session this token opened; None when it is unknown, expired, signed out, or its key was revoked."""
        value = await self._cache.get(console_session_key(token))
        if value is None:
            return None
        stored = orjson.loads(value)
        scope = stored.get("scope")
        if scope not in SCOPES:
            return None
        session = Session(Principal(subject=stored.get("subject"), scope=scope), str(stored.get("csrf")))
        subject = session.principal.subject or ""
        if subject.startswith(_KEY_SUBJECT) and not await self._key_active(subject[len(_KEY_SUBJECT) :]):
            await self.close(token)
            return None
        return session

    async def close(self, token: str) -> None:
        await self._cache.take(console_session_key(token))

    async def _key_active(self, key_id: str) -> bool:
        checked = self._keys_checked.get(key_id)
        if checked is not None and checked[0] > time.monotonic():
            return checked[1]
        try:
            async with self._database() as db:
                found = await db.scalar(
                    select(ApiKeyRow.id).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                )
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise ServiceUnavailableError(
                f"cannot check the session's API key: the database is unavailable ({type(exc).__name__})",
                retry_after=2,
            ) from exc
        if len(self._keys_checked) > 10_000:
            self._keys_checked.clear()
        self._keys_checked[key_id] = (time.monotonic() + self._key_check_seconds, found is not None)
        return found is not None

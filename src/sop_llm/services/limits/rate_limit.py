"""Rate limits per caller: requests per minute (a moving window, exact) and tokens per minute (a fixed
window charged with each answer's tokens), kept in Redis when REDIS_URL is set, so every replica counts against the
same numbers (the `limits` library's atomic Redis scripts), else in this process.

When Redis does not answer within REDIS_TIMEOUT, RATE_LIMIT_REDIS_DOWN decides, and Redis is left alone for a
few seconds (infra/backoff.py) before it is tried again: `local` (default) limits each replica on its own
counters meanwhile, `open` lets every request through, `closed` refuses with 503. With no limit set (the default)
the `limits` library is not imported at all."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sop_llm.infra.backoff import Backoff
from sop_llm.infra.errors import ServiceUnavailableError
from sop_llm.infra.redis_keys import RATE_LIMIT_PREFIX
from sop_llm.infra.settings import Settings

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.storage import Storage
    from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the window frees room
    what: str = "requests"


class _Counters:
    def __init__(self, storage: Storage) -> None:
        from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

        self.requests = MovingWindowRateLimiter(storage)
        self.tokens = FixedWindowRateLimiter(storage)


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self._requests: RateLimitItem | None = None
        self._tokens: RateLimitItem | None = None
        self._policy = settings.rate_limit_redis_down
        self._local: _Counters | None = None
        self._shared: _Counters | None = None
        self._backoff = Backoff("rate limits: Redis")
        self._storage_error: type[Exception] | tuple[()] = ()  # what a failing Redis raises; nothing while off
        per_minute = settings.rate_limit_requests_per_minute, settings.rate_limit_tokens_per_minute
        if not any(per_minute):
            return
        from limits import RateLimitItemPerMinute
        from limits.aio.storage import MemoryStorage, RedisStorage
        from limits.errors import StorageError

        self._storage_error = StorageError
        if settings.rate_limit_requests_per_minute:
            self._requests = RateLimitItemPerMinute(settings.rate_limit_requests_per_minute, namespace="req")
        if settings.rate_limit_tokens_per_minute:
            self._tokens = RateLimitItemPerMinute(settings.rate_limit_tokens_per_minute, namespace="tok")
        self._local = _Counters(MemoryStorage())
        if settings.redis_url:
            timeout = settings.redis_timeout
            storage = RedisStorage(
                "async+" + settings.redis_url,
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=RATE_LIMIT_PREFIX,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            self._shared = _Counters(storage)

    @property
    def enabled(self) -> bool:
        return self._requests is not None or self._tokens is not None

    def _counters(self) -> _Counters | None:
        """The counters to use now; None means "let it through" (Redis down, policy open)."""
        if self._shared is None or self._backoff.available:
            return self._shared or self._local
        if self._policy == "closed":
            raise ServiceUnavailableError(
                "rate limits cannot be checked (Redis unreachable; RATE_LIMIT_REDIS_DOWN=closed)", retry_after=5
            )
        return self._local if self._policy == "local" else None

    @property
    def redis_failures(self) -> int:
        return self._backoff.failures

    def _redis_failed(self, exc: Exception) -> None:
        self._backoff.failed(exc, f"policy '{self._policy}'")

    async def admit(self, key: str) -> Decision | None:
        """Count one request for `key`; None when no limit applies."""
        if not self.enabled:
            return None
        counters = self._counters()
        if counters is None:
            return None
        try:
            return await self._admit(counters, key)
        except self._storage_error as exc:
            self._redis_failed(exc)
        return await self.admit(key)  # once more, under the Redis-down policy

    async def _admit(self, counters: _Counters, key: str) -> Decision | None:
        decision = None
        if self._tokens is not None and not await counters.tokens.test(self._tokens, key):
            return await self._decision(counters.tokens, self._tokens, key, False, "tokens")
        if self._requests is not None:
            allowed = await counters.requests.hit(self._requests, key)
            decision = await self._decision(counters.requests, self._requests, key, allowed, "requests")
        return decision

    @staticmethod
    async def _decision(
        limiter: MovingWindowRateLimiter | FixedWindowRateLimiter,
        item: RateLimitItem,
        key: str,
        allowed: bool,
        what: str,
    ) -> Decision:
        stats = await limiter.get_window_stats(item, key)
        return Decision(allowed, item.amount, max(0, stats.remaining), max(0.0, stats.reset_time - time.time()), what)

    async def charge_tokens(self, key: str, tokens: int) -> None:
        if self._tokens is None or tokens <= 0:
            return
        try:
            counters = self._counters()
        except ServiceUnavailableError:
            return
        if counters is None:
            return
        try:
            await counters.tokens.hit(self._tokens, key, cost=tokens)
        except self._storage_error as exc:
            self._redis_failed(exc)

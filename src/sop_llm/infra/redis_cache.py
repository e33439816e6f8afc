"""The Redis cache backend: one connection pool, REDIS_TIMEOUT on every call, and a breaker: a Redis that
errs or does not answer in time turns lookups into misses (counted in `stats.errors`) and is left alone for
a few seconds (infra/backoff.py), so a slow or dead Redis costs one timeout, never a hang or a 500."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sop_llm.infra.backoff import Backoff
from sop_llm.infra.cache import Cache


class RedisCache(Cache):
    backend = "redis"

    def __init__(self, url: str, default_ttl: int, timeout: float) -> None:
        super().__init__()
        self._default_ttl = default_ttl
        self._client: Redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, max_connections=64
        )
        self._backoff = Backoff("cache: Redis")

    def _failed(self, exc: Exception) -> None:
        self.stats.errors += 1
        self._backoff.failed(exc, "treating lookups as misses")

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found: list[bytes | None] = [None] * len(keys)
        if keys and self._backoff.available:
            try:
                found = [value if isinstance(value, bytes) else None for value in await self._client.mget(list(keys))]
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc)
        hits = sum(value is not None for value in found)
        self.stats.hits += hits
        self.stats.misses += len(keys) - hits
        return found

    async def set_many(self, items: Iterable[tuple[str, bytes]], ttl: int | None = None) -> None:
        if not self._backoff.available:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(key, value, ex=ttl or self._default_ttl)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    async def take(self, key: str) -> bytes | None:
        if not self._backoff.available:
            return None
        try:
            value = await self._client.getdel(key)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        return value if isinstance(value, bytes) else None

    async def aclose(self) -> None:
        await self._client.aclose()

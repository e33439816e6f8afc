"""Budget counters in Redis (with REDIS_URL), counters.py's `Counters`: one Lua script checks every limit and
reserves in one step, so replicas can never grant the same tokens twice. A Redis that fails is left alone for a few
seconds, and this process's own counters stand in meanwhile (logged)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sop_llm.infra.backoff import Backoff
from sop_llm.services.usage.counters import MemoryCounters, Outcome

# KEYS: one counter per limit; ARGV[1]: tokens wanted; ARGV[2]: the fewest worth granting; ARGV[3..n+2]: the
# limits; ARGV[n+3..2n+2]: TTLs (s). Returns {granted, 0}, or {0, i} when limit i (1-based) has too little room.
_RESERVE = """
local n = #KEYS
local grant = tonumber(ARGV[1])
local least = tonumber(ARGV[2])
for i = 1, n do
  local room = tonumber(ARGV[2 + i]) - tonumber(redis.call('GET', KEYS[i]) or '0')
  if room < least then return {0, i} end
  if room < grant then grant = room end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], grant)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2 + n + i]))
end
return {grant, 0}
"""


class RedisCounters:
    def __init__(self, url: str, timeout: float) -> None:
        self._client: Redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._client.register_script(_RESERVE)
        self._local = MemoryCounters()
        self._backoff = Backoff("budgets: Redis")

    def _failed(self, exc: Exception) -> None:
        self._backoff.failed(exc, "this process counts budgets on its own")

    async def reserve(
        self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int], want: int, least: int
    ) -> Outcome:
        if self._backoff.available:
            try:
                granted, exhausted = await self._script(keys=list(keys), args=[want, least, *limits, *ttls])
                return Outcome(int(granted), int(exhausted) - 1 if exhausted else None)
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc)
        return await self._local.reserve(keys, limits, ttls, want, least)

    async def add(self, keys: Sequence[str], delta: int) -> None:
        if delta == 0:
            return
        if self._backoff.available:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.incrby(key, delta)
                    await pipe.execute()
                return
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc)
        await self._local.add(keys, delta)

    async def used(self, keys: Sequence[str]) -> list[int]:
        if self._backoff.available:
            try:
                return [int(value or 0) for value in await self._client.mget(list(keys))]
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc)
        return await self._local.used(keys)

    async def aclose(self) -> None:
        await self._client.aclose()

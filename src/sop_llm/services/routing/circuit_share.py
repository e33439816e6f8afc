"""Circuit state shared across replicas through Redis (with REDIS_URL): a replica whose breaker opens writes
`sop-llm:circuit:<deployment>` = the wall-clock time the cool-down ends (expiring then); every replica reads those
keys each second and opens its own breaker for what is left. So one replica's failures spare the others their own
N failing calls. Probing after the cool-down stays per replica. Redis trouble only means no sharing for a while."""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sop_llm.infra.backoff import Backoff
from sop_llm.infra.redis_keys import circuit_key
from sop_llm.services.routing.circuit_breaker import CircuitBreaker, CircuitState


class SharedCircuits:
    def __init__(self, url: str, timeout: float) -> None:
        self._client: Redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._published: dict[str, int] = {}
        self._backoff = Backoff("circuit sharing: Redis")

    async def sync(self, breakers: dict[str, CircuitBreaker]) -> None:
        if not breakers or not self._backoff.available:
            return
        try:
            await self._publish(breakers)
            await self._adopt(breakers)
        except (RedisError, OSError, TimeoutError) as exc:
            self._backoff.failed(exc, "breakers stay local")

    async def _publish(self, breakers: dict[str, CircuitBreaker]) -> None:
        for name, breaker in breakers.items():
            if breaker.times_opened == self._published.get(name, 0):
                continue
            self._published[name] = breaker.times_opened
            remaining = breaker.retry_in()
            if breaker.state is CircuitState.OPEN and remaining > 0:
                await self._client.set(
                    circuit_key(name), repr(time.time() + remaining), px=max(1, int(remaining * 1000))
                )

    async def _adopt(self, breakers: dict[str, CircuitBreaker]) -> None:
        names = list(breakers)
        now = time.time()
        for name, value in zip(names, await self._client.mget([circuit_key(n) for n in names]), strict=True):
            if value is not None and (remaining := float(value) - now) > 0:
                breakers[name].open_for(remaining)

    async def aclose(self) -> None:
        await self._client.aclose()

"""A deployment's own limits — requests in flight (`max_parallel`), requests per minute (`rpm`, a moving window)
and tokens per minute (`tpm`, a fixed window charged with each answer's tokens) — counted in this process, or in
Redis when REDIS_URL is set, so that every gateway replica counts against the same numbers.

In Redis, a request in flight is a lease (a sorted-set member expiring after LEASE_SECONDS): a replica that dies
mid-request frees its slots when its leases run out. Checks and counts happen in one script, so two replicas
cannot both take the last slot. When Redis does not answer, each replica counts on its own until it does."""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sop_llm.infra.backoff import Backoff
from sop_llm.infra.redis_keys import node_key

# A lease outlives any request a replica still serves; only a replica that died leaves one to expire.
LEASE_SECONDS = 900.0
WINDOW = 60.0

# KEYS[1] leases (member -> expiry), KEYS[2] requests (member -> time), ARGV: lease, max_parallel, rpm, tpm,
# lease seconds, key prefix. Returns 0 when admitted, else which limit refused: 1 parallel, 2 rpm, 3 tpm.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local parallel, rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if parallel > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
  if redis.call('ZCARD', KEYS[1]) >= parallel then return 1 end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t - 60)
  if redis.call('ZCARD', KEYS[2]) >= rpm then return 2 end
end
if tpm > 0 then
  local used = tonumber(redis.call('GET', ARGV[6] .. ':tokens:' .. math.floor(t / 60)) or '0')
  if used >= tpm then return 3 end
end
if parallel > 0 then
  redis.call('ZADD', KEYS[1], t + tonumber(ARGV[5]), ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[5])))
end
if rpm > 0 then
  redis.call('ZADD', KEYS[2], t, ARGV[1])
  redis.call('EXPIRE', KEYS[2], 61)
end
return 0
"""
# KEYS[1] leases; ARGV: lease, tokens, key prefix.
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  local now = redis.call('TIME')
  local key = ARGV[3] .. ':tokens:' .. math.floor(tonumber(now[1]) / 60)
  redis.call('INCRBY', key, tokens)
  redis.call('EXPIRE', key, 120)
end
return 0
"""
_REFUSED = {1: "max_parallel", 2: "rpm", 3: "tpm"}


@dataclass(frozen=True)
class Limits:
    max_parallel: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    def __bool__(self) -> bool:
        return any((self.max_parallel, self.rpm, self.tpm))

    def describe(self) -> dict[str, int | None]:
        return {"max_parallel": self.max_parallel, "rpm": self.rpm, "tpm": self.tpm}


class LocalCounts:
    """The limits counted in this process."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._leases: set[str] = set()
        self._requests: deque[float] = deque()
        self._tokens_minute = 0
        self._tokens = 0

    def acquire(self, lease: str) -> str | None:
        """None when admitted, else the limit that refused."""
        now = time.time()
        limits = self._limits
        if limits.max_parallel and len(self._leases) >= limits.max_parallel:
            return "max_parallel"
        while self._requests and self._requests[0] <= now - WINDOW:
            self._requests.popleft()
        if limits.rpm and len(self._requests) >= limits.rpm:
            return "rpm"
        if limits.tpm and self._tokens_this_minute(now) >= limits.tpm:
            return "tpm"
        if limits.max_parallel:
            self._leases.add(lease)
        if limits.rpm:
            self._requests.append(now)
        return None

    def release(self, lease: str, tokens: int) -> None:
        self._leases.discard(lease)
        if tokens > 0:
            self._tokens = self._tokens_this_minute(time.time()) + tokens

    def _tokens_this_minute(self, now: float) -> int:
        minute = int(now // WINDOW)
        if minute != self._tokens_minute:
            self._tokens_minute, self._tokens = minute, 0
        return self._tokens


class NodeLimits:
    def __init__(self, deployment: str, limits: Limits, redis: Redis | None = None) -> None:
        self.limits = limits
        self._local = LocalCounts(limits)
        self._redis = redis
        self._prefix = node_key(deployment)
        self._backoff = Backoff(f"limits of deployment {deployment}: Redis")
        self._local_leases: set[str] = set()  # leases taken in this process while Redis was away
        self.refused: dict[str, int] = {"max_parallel": 0, "rpm": 0, "tpm": 0}

    async def acquire(self) -> str | None:
        """A lease on the node (hand it back with `release`), or None when a limit refuses the request now."""
        lease = uuid.uuid4().hex
        refused = await self._acquire(lease)
        if refused is not None:
            self.refused[refused] += 1
            return None
        return lease

    async def _acquire(self, lease: str) -> str | None:
        if self._redis is not None and self._backoff.available:
            try:
                keys = [f"{self._prefix}:parallel", f"{self._prefix}:requests"]
                limits = self.limits
                args: list[str | int | float] = [
                    lease,
                    limits.max_parallel or 0,
                    limits.rpm or 0,
                    limits.tpm or 0,
                    LEASE_SECONDS,
                    self._prefix,
                ]
                code = int(await self._redis.eval(_ACQUIRE, 2, *keys, *args))
                return _REFUSED.get(code)
            except (RedisError, OSError, TimeoutError) as exc:
                self._backoff.failed(exc, "each replica counts its own requests")
        self._local_leases.add(lease)
        return self._local.acquire(lease)

    async def release(self, lease: str, tokens: int) -> None:
        if lease in self._local_leases or self._redis is None:
            self._local_leases.discard(lease)
            self._local.release(lease, tokens)
            return
        try:
            await self._redis.eval(_RELEASE, 1, f"{self._prefix}:parallel", lease, tokens, self._prefix)
        except (RedisError, OSError, TimeoutError) as exc:
            self._backoff.failed(exc, "each replica counts its own requests")

    def describe(self) -> dict[str, object]:
        return {**self.limits.describe(), "refused": dict(self.refused)}

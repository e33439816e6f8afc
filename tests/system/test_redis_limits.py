"""Rate limits and the cache over a redis-server this module starts: two API processes count against
the same per-key limit; a paused Redis costs no request more than 2 s, turns cache lookups into misses, and the
limiter follows RATE_LIMIT_REDIS_DOWN; after the pause everything recovers without a restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sop_llm.migrations import upgrade
from tests.live_server import free_port
from tests.system.servers import Redis, Service, wait_healthy

pytestmark = [pytest.mark.system, pytest.mark.slow]


class Replicas:
    def __init__(self, redis: Redis, count: int, **settings: str) -> None:
        database = Path(tempfile.mkdtemp(prefix="sop-llm-limits-")) / "keys.db"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "DATABASE_AUTO_MIGRATE": "false",
            "AUTH_ENABLED": "true",
            "API_KEY_CACHE_SECONDS": "300",
            "REDIS_URL": redis.url,
            "REDIS_TIMEOUT": "0.5",
            "LLAMA_N_THREADS": "1",
            "CONFIG_DIR": "config",
            "LOG_LEVEL": "INFO",
            **settings,
        }
        upgrade(self.env["DATABASE_URL"])
        self.services = [Service("serve", self.env, free_port()) for _ in range(count)]
        self.urls = [f"http://127.0.0.1:{s.port}" for s in self.services]
        for service in self.services:
            service.start()
        for url, service in zip(self.urls, self.services, strict=True):
            wait_healthy(url, service, ready=True)

    def key(self, name: str) -> str:
        command = [sys.executable, "-m", "sop_llm", "keys", "create", "--name", name]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, check=True)
        return done.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        for service in self.services:
            service.stop()


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    server = Redis()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def pair(redis: Redis) -> Iterator[Replicas]:
    replicas = Replicas(redis, 2, RATE_LIMIT_REQUESTS_PER_MINUTE="10")
    yield replicas
    replicas.stop()


def _check_refusal(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["X-RateLimit-Limit"] == "10"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_a_key_gets_exactly_its_limit_across_two_processes(pair: Replicas) -> None:
    headers = {"Authorization": f"Bearer {pair.key('alternating')}"}
    answers = [httpx.get(f"{pair.urls[n % 2]}/v1/models", headers=headers) for n in range(30)]
    assert [a.status_code for a in answers].count(200) == 10
    assert all(a.status_code == 200 for a in answers[:10])
    for refused in answers[10:]:
        _check_refusal(refused)
    assert {a.headers["X-RateLimit-Remaining"] for a in answers[:10]} == {str(n) for n in range(10)}


async def test_the_same_with_40_concurrent_requests(pair: Replicas) -> None:
    headers = {"Authorization": f"Bearer {pair.key('concurrent')}"}
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(
            *(client.get(f"{pair.urls[n % 2]}/v1/models", headers=headers) for n in range(40))
        )
    assert [a.status_code for a in answers].count(200) == 10
    for refused in (a for a in answers if a.status_code != 200):
        _check_refusal(refused)
    other = httpx.get(f"{pair.urls[0]}/v1/models", headers={"Authorization": f"Bearer {pair.key('other')}"})
    assert other.status_code == 200  # limits are per key


def _stats(url: str, headers: dict[str, str]) -> dict[str, Any]:
    components: dict[str, Any] = httpx.get(f"{url}/api/v1/health", headers=headers).json()["components"]
    return components


async def _load(url: str, headers: dict[str, str], seconds: float) -> list[tuple[int, float]]:
    """Steady load: one cached embedding request after another; (status, seconds) of each."""
    answers: list[tuple[int, float]] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = await client.post(f"{url}/api/v1/embeddings", json={"texts": ["steady"]}, headers=headers)
            answers.append((response.status_code, time.monotonic() - started))
            await asyncio.sleep(0.02)
    return answers


def test_a_paused_redis_costs_no_request_more_than_2_s(redis: Redis) -> None:
    local = Replicas(redis, 1, RATE_LIMIT_REQUESTS_PER_MINUTE="100000", RATE_LIMIT_REDIS_DOWN="local")
    closed = Replicas(redis, 1, RATE_LIMIT_REQUESTS_PER_MINUTE="100000", RATE_LIMIT_REDIS_DOWN="closed")
    try:
        local_key = {"Authorization": f"Bearer {local.key('steady')}"}
        closed_key = {"Authorization": f"Bearer {closed.key('steady')}"}

        async def phase(seconds: float) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
            return await asyncio.gather(
                _load(local.urls[0], local_key, seconds), _load(closed.urls[0], closed_key, seconds)
            )

        before_local, before_closed = asyncio.run(phase(2))
        assert {s for s, _ in before_local + before_closed} == {200}
        warm = _stats(local.urls[0], local_key)["cache"]
        assert warm["backend"] == "redis"
        assert warm["hits"] > 0

        redis.pause()
        try:
            during_local, during_closed = asyncio.run(phase(4))
            cache_during = _stats(local.urls[0], local_key)["cache"]
        finally:
            redis.resume()
        slowest = max(t for _, t in during_local + during_closed)
        assert slowest < 2, f"a request took {slowest:.2f} s while Redis was paused"
        print(
            f"Redis paused 4 s: {len(during_local)} + {len(during_closed)} requests, slowest {slowest:.3f} s; "
            f"closed policy: {sum(s == 503 for s, _ in during_closed)} x 503"
        )
        assert {s for s, _ in during_local} == {200}  # local: each replica limits on its own meanwhile
        assert 503 in {s for s, _ in during_closed}  # closed: refused, quickly
        assert cache_during["errors"] >= 1
        assert cache_during["misses"] > warm["misses"]  # lookups while paused were misses
        assert _stats(local.urls[0], local_key)["rate_limits"]["redis_failures"] >= 1

        time.sleep(6)  # past the breaker's retry time
        after_local, after_closed = asyncio.run(phase(2))
        assert {s for s, _ in after_local + after_closed} == {200}
        recovered = _stats(local.urls[0], local_key)["cache"]
        assert recovered["hits"] > cache_during["hits"]  # Redis serves the cache again, no restart
    finally:
        local.stop()
        closed.stop()

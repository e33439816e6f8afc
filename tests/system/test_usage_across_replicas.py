"""Usage accounting and budgets across replicas: two `sop-llm serve` processes share one PostgreSQL and one
redis-server (both started here) in front of a scripted OpenAI-compatible upstream. 20,000 requests from five keys,
spread over both processes, must show up in `GET /api/v1/usage` exactly — per key and model — and a key with a
1,000-token daily budget gets exactly 1,000 tokens between the two processes, then 429 from both."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from sop_llm.migrations import upgrade
from tests.fakes.openai_server import FakeOpenAI
from tests.live_server import free_port
from tests.system.servers import Postgres, Redis, Service, wait_healthy

pytestmark = [pytest.mark.system, pytest.mark.slow]

REQUESTS = 20_000
KEYS = 5
MODELS = ("remote-a", "remote-b")
CONCURRENCY = 32
PROMPT = "count me in, please!"  # 20 characters: estimated at 5 tokens, and the upstream counts 5


class Replicas:
    def __init__(self, postgres: Postgres, redis: Redis, upstream: FakeOpenAI) -> None:
        folder = Path(tempfile.mkdtemp(prefix="sop-llm-replicas-"))
        (folder / "providers.yaml").write_text(
            f'providers:\n  fake: {{type: openai, base_url: "{upstream.url}", timeout: 10}}\n'
        )
        (folder / "models.yaml").write_text(
            "models:\n" + "".join(f"  {name}: {{provider: fake, model: ok}}\n" for name in MODELS)
        )
        (folder / "embeddings.yaml").write_text("embeddings: {}\n")
        self.env = {
            **os.environ,
            "CONFIG_DIR": str(folder),
            "DATABASE_URL": postgres.url,
            "DATABASE_AUTO_MIGRATE": "false",
            "REDIS_URL": redis.url,
            "AUTH_ENABLED": "true",
            "LLM_DEFAULT_MODEL": MODELS[0],
            "JSON_FIXER_ENABLED": "false",
            "USAGE_FLUSH_SECONDS": "1",
            "BUDGET_CACHE_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
        }
        self.ports = [free_port(), free_port()]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.services = [Service("serve", self.env, port) for port in self.ports]

    def start(self) -> None:
        for service in self.services:
            service.start()
        for url, service in zip(self.urls, self.services, strict=True):
            wait_healthy(url, service, ready=True)

    def stop(self) -> None:
        for service in self.services:
            service.stop()

    def create_key(self, name: str, scope: str = "user") -> str:
        made = subprocess.run(
            [sys.executable, "-m", "sop_llm", "keys", "create", "--name", name, "--scope", scope],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def replicas() -> Iterator[Replicas]:
    postgres, redis, upstream = Postgres(), Redis(), FakeOpenAI().start()
    postgres.start()
    redis.start()
    upgrade(postgres.url)
    running = Replicas(postgres, redis, upstream)
    running.start()
    yield running
    running.stop()
    upstream.stop()
    redis.remove()
    postgres.remove()


def _subject(admin_headers: dict[str, str], url: str, key: str) -> str:
    listed = httpx.get(f"{url}/api/v1/admin/keys", headers=admin_headers).json()["keys"]
    return "key:" + next(entry["id"] for entry in listed if key.startswith(entry["prefix"]))


def test_usage_from_two_replicas_adds_up_exactly(replicas: Replicas) -> None:
    admin = {"Authorization": f"Bearer {replicas.create_key('admin', 'admin')}"}
    keys = [replicas.create_key(f"team {n}") for n in range(KEYS)]
    sent: Counter[tuple[str, str]] = Counter()
    tokens: Counter[tuple[str, str, str]] = Counter()
    failures: list[str] = []

    async def load() -> float:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(REQUESTS):
            queue.put_nowait(n)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                while not queue.empty():
                    n = queue.get_nowait()
                    key, model = keys[n % KEYS], MODELS[(n // KEYS) % 3 % 2]  # unequal shares per model
                    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1 + n % 2}
                    async with session.post(
                        f"{replicas.urls[n % 2]}/v1/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {key}"},
                    ) as answer:
                        if answer.status != 200:
                            failures.append(f"{answer.status} {await answer.text()}")
                            continue
                        usage = (await answer.json())["usage"]
                    sent[(key, model)] += 1
                    tokens[(key, model, "prompt")] += usage["prompt_tokens"]
                    tokens[(key, model, "completion")] += usage["completion_tokens"]

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            return time.monotonic() - started

    elapsed = asyncio.run(load())
    assert failures == []
    print(f"{REQUESTS} requests through two replicas in {elapsed:.1f} s ({REQUESTS / elapsed:.0f}/s)")
    time.sleep(2.5)  # both replicas flush every second
    report = httpx.get(f"{replicas.urls[0]}/api/v1/usage", headers=admin, timeout=30).json()
    rows = {(row["subject"], row["model"]): row for row in report["data"]}
    subjects = {key: _subject(admin, replicas.urls[1], key) for key in keys}
    for (key, model), count in sent.items():
        row = rows[(subjects[key], model)]
        assert row["requests"] == count, (key[:10], model)
        assert row["errors"] == 0
        assert row["prompt_tokens"] == tokens[(key, model, "prompt")]
        assert row["completion_tokens"] == tokens[(key, model, "completion")]
    assert sum(row["requests"] for row in report["data"] if row["subject"] in subjects.values()) == REQUESTS


def test_a_daily_budget_holds_across_replicas(replicas: Replicas) -> None:
    admin = {"Authorization": f"Bearer {replicas.create_key('budget admin', 'admin')}"}
    key = replicas.create_key("on a budget")
    subject = _subject(admin, replicas.urls[0], key)
    set_budget = httpx.put(
        f"{replicas.urls[0]}/api/v1/admin/budgets", json={"subject": subject, "tokens_per_day": 1000}, headers=admin
    )
    assert set_budget.status_code == 200, set_budget.text
    time.sleep(1.5)  # the other replica reads budgets at most a second old
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": MODELS[0], "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}
    served: list[int] = []
    for n in range(200):
        answer = httpx.post(f"{replicas.urls[n % 2]}/v1/chat/completions", json=body, headers=headers)
        if answer.status_code == 429:
            break
        assert answer.status_code == 200, answer.text
        served.append(answer.json()["usage"]["total_tokens"])
    assert sum(served) == 1000  # 142 answers of 7 tokens, then one of 6 (max_tokens lowered to fit)
    assert served == [7] * 142 + [6]
    for url in replicas.urls:
        refused = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "budget_exceeded"
    budgets = httpx.get(f"{replicas.urls[1]}/api/v1/admin/budgets", headers=admin).json()["budgets"]
    assert [entry["used_today"] for entry in budgets if entry["subject"] == subject] == [1000]

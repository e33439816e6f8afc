"""Fair shares and preemption on the batched scheduler, through a live server with auth on and two callers (JWT
subjects): a caller's request is admitted ahead of another caller's queue, the preempted request's greedy answer is
the one it gives uninterrupted, an interactive request preempts a background task, a cancelled preempted request
frees everything, and a long mixed run leaves the KV cache and the process's memory where they started."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import psutil
import pytest
from openai import AsyncOpenAI

from tests.live_server import LiveServer, make_settings, smollm2_config

pytestmark = [pytest.mark.integration, pytest.mark.api, pytest.mark.slow]

MODEL = "smollm2-135m"
SLOTS = 2
SECRET = "a-test-secret-that-is-long-enough-for-hs256"
STORY = "1, 2, 3, 4, 5,"  # SmolLM2 keeps counting until max_tokens


def token(subject: str, scope: str = "user") -> str:
    claims = {"sub": subject, "scope": scope, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def fair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = smollm2_config(tmp_path_factory.mktemp("fair-config"), context_length=512, parallel=SLOTS)
    settings = make_settings(
        CONFIG_DIR=str(folder), AUTH_ENABLED=True, JWT_ALGORITHMS=["HS256"], JWT_SECRET=SECRET, TASKS_CONCURRENCY=2
    )
    live = LiveServer(settings).start()
    yield live
    live.stop()


def client(live: LiveServer, subject: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{live.url}/v1", api_key=token(subject), max_retries=0, timeout=300)


def stats(live: LiveServer) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token('admin', 'admin')}"}
    models = httpx.get(f"{live.url}/api/v1/models", headers=headers).json()["models"]
    entry: dict[str, Any] = next(m for m in models if m["name"] == MODEL)
    return entry


async def until(live: LiveServer, check: Any, what: str) -> dict[str, Any]:
    for _ in range(3000):
        entry = stats(live)
        if check(entry["stats"]):
            return entry
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} never happened: {stats(live)}")


def idle(s: dict[str, Any]) -> bool:
    return bool(s["active"] == 0 and s["running_sequences"] == 0 and s["waiting_sequences"] == 0)


async def count(live: LiveServer, subject: str, start: int, max_tokens: int) -> str:
    answer = await client(live, subject).completions.create(
        model=MODEL, prompt=f"{start}, {start + 1}, {start + 2},", max_tokens=max_tokens, temperature=0
    )
    return answer.choices[0].text


async def test_a_second_caller_goes_first_and_the_preempted_answer_is_unchanged(fair: LiveServer) -> None:
    await until(fair, idle, "idle")
    alone = [await count(fair, "alice", start, 96) for start in (10, 20, 30)]
    before = (await until(fair, idle, "idle"))["stats"]
    finished: list[str] = []

    async def timed(name: str, work: Any) -> str:
        text: str = await work
        finished.append(name)
        return text

    alice = [asyncio.create_task(timed(f"alice{i}", count(fair, "alice", s, 96))) for i, s in enumerate((10, 20, 30))]
    await until(fair, lambda s: s["running_sequences"] == SLOTS, "alice filling both slots")
    bob = await timed("bob", count(fair, "bob", 5, 8))
    crowded = await asyncio.gather(*alice)
    after = (await until(fair, idle, "idle"))["stats"]
    # Alice held both slots with a third request waiting; Bob was admitted at once, ahead of it, by preempting one.
    assert finished[0] == "bob", finished
    assert after["preemptions"] > before["preemptions"]
    assert crowded == alone
    assert bob == await count(fair, "bob", 5, 8)


async def test_an_interactive_request_preempts_a_background_task_which_resumes_unchanged(fair: LiveServer) -> None:
    await until(fair, idle, "idle")
    payload = {"prompt": "100, 101, 102,", "max_tokens": 160, "temperature": 0}
    headers = {"Authorization": f"Bearer {token('alice')}"}
    direct = await client(fair, "alice").completions.create(model=MODEL, **payload)  # type: ignore[arg-type]
    before = (await until(fair, idle, "idle"))["stats"]
    tasks = [
        httpx.post(f"{fair.url}/api/v1/tasks", json={"kind": "generate", "payload": payload}, headers=headers)
        for _ in range(SLOTS)
    ]
    assert all(t.status_code == 202 for t in tasks), [t.text for t in tasks]
    await until(fair, lambda s: s["running_sequences"] == SLOTS, "the tasks filling both slots")
    chat = await count(fair, "bob", 7, 8)
    assert chat == await count(fair, "bob", 7, 8)
    results = []
    for task in tasks:
        for _ in range(3000):
            body = httpx.get(f"{fair.url}/api/v1/tasks/{task.json()['id']}", headers=headers).json()
            if body["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)
        assert body["status"] == "completed", body
        results.append(body["result"]["text"])
    after = (await until(fair, idle, "idle"))["stats"]
    assert after["preemptions"] > before["preemptions"]
    assert results == [direct.choices[0].text] * SLOTS


async def test_a_cancelled_preempted_request_frees_everything(fair: LiveServer) -> None:
    await until(fair, idle, "idle")
    start = stats(fair)["stats"]
    http = httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {token('alice')}"})
    body = {"model": MODEL, "prompt": STORY, "max_tokens": 400, "temperature": 0, "stream": True}
    first = asyncio.create_task(count(fair, "alice", 40, 200))
    await until(fair, lambda s: s["running_sequences"] == 1, "alice's first request running")
    async with http.stream("POST", f"{fair.url}/v1/completions", json=body) as second:
        assert second.status_code == 200
        lines = second.aiter_lines()
        while not (await anext(lines)).startswith("data: "):
            pass
        bob = asyncio.create_task(count(fair, "bob", 3, 200))  # preempts alice's latest: the stream
        await until(fair, lambda s: s["preemptions"] > start["preemptions"], "a preemption")
        assert stats(fair)["stats"]["preempted_waiting"] == 1
    # Leaving the block closed the stream while it was preempted.
    await asyncio.gather(first, bob)
    await http.aclose()
    end = (await until(fair, idle, "idle"))["stats"]
    assert end["preempted_waiting"] == 0
    assert end["parked_kv_cells"] == 0
    assert end["cancelled"] == start["cancelled"] + 1


async def test_two_thousand_mixed_requests_leave_kv_and_memory_where_they_started(fair: LiveServer) -> None:
    """Three callers, tasks among them, some requests cancelled mid-way and preemptions throughout."""
    rng = random.Random(7)
    callers = {name: client(fair, name) for name in ("alice", "bob", "carol")}
    task_headers = {"Authorization": f"Bearer {token('carol')}"}

    async def one(i: int) -> None:
        who = rng.choice(list(callers))
        prompt = f"{i % 50}, {i % 50 + 1},"
        if i % 10 == 0:  # a task: the background class
            async with httpx.AsyncClient(timeout=60) as http:
                task = {"kind": "generate", "payload": {"prompt": prompt, "max_tokens": 3, "temperature": 0}}
                await http.post(f"{fair.url}/api/v1/tasks", json=task, headers=task_headers)
            return
        work = callers[who].completions.create(model=MODEL, prompt=prompt, max_tokens=rng.choice((1, 2, 4, 8)))
        if i % 7 == 0:  # cancelled while it waits or runs
            with_timeout = asyncio.create_task(work)
            await asyncio.sleep(rng.random() * 0.05)
            with_timeout.cancel()
            await asyncio.gather(with_timeout, return_exceptions=True)
        else:
            await work

    async def run(first: int, n: int) -> None:
        gate = asyncio.Semaphore(12)

        async def gated(i: int) -> None:
            async with gate:
                await one(i)

        await asyncio.gather(*(gated(i) for i in range(first, first + n)))

    await run(0, 200)  # warm up: allocator pools, caches, the task runner
    await asyncio.sleep(2)  # tasks still queued finish
    warmed = await until(fair, idle, "idle after the warm-up")
    rss_before = psutil.Process().memory_info().rss
    await run(200, 2000)
    await until(fair, idle, "idle after the run")
    await asyncio.sleep(2)  # tasks still queued finish
    after = (await until(fair, idle, "idle"))["stats"]
    rss_after = psutil.Process().memory_info().rss
    assert after["preemptions"] > warmed["stats"]["preemptions"]
    assert after["preempted_waiting"] == 0 and after["parked_kv_cells"] == 0
    assert after["kv_cells_used"] <= SLOTS * 32  # what the last prompts and answers hold for the next turn
    assert rss_after - rss_before < 64 * 2**20, (rss_before, rss_after)

"""Tasks across processes: the API (`sop-llm serve`) and two `sop-llm worker` processes share a
PostgreSQL and a redis-server that this module starts itself, so it can stop, pause and kill them."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from sop_llm.migrations import upgrade
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.live_server import free_port
from tests.system.servers import Postgres, Redis, Service, wait_healthy

pytestmark = [pytest.mark.system, pytest.mark.slow]

LEASE_SECONDS = 6
TERMINAL = {"completed", "failed", "cancelled"}


class Stack:
    def __init__(self, postgres: Postgres, redis: Redis, receiver: WebhookReceiver) -> None:
        self.postgres, self.redis, self.receiver = postgres, redis, receiver
        self.env = {
            **os.environ,
            "DATABASE_URL": postgres.url,
            "DATABASE_TIMEOUT": "2",
            "DATABASE_AUTO_MIGRATE": "false",
            "BROKER_URL": redis.url,
            "BROKER_TIMEOUT": "1",
            "WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',  # the test's own receiver
            "TASKS_CONCURRENCY": "2",
            "TASKS_LEASE_SECONDS": str(LEASE_SECONDS),
            "TASKS_REDISPATCH_SECONDS": "5",
            "LLM_MAX_CONCURRENT_REQUESTS": "2",
            "LLAMA_N_THREADS": "1",  # two workers and the API share 2 cores; see docs/tasks.md
            "CONFIG_DIR": "config",
            "FILES_DIR": tempfile.mkdtemp(prefix="sop-llm-files-"),
            "BATCH_CONCURRENCY": "2",
            "LOG_LEVEL": "INFO",
        }
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = Service("serve", self.env, self.port)
        self.workers = [Service("worker", self.env), Service("worker", self.env)]

    def logs(self) -> str:
        return "\n".join(f"--- {s.log}\n{s.log.read_text()[-3000:]}" for s in [self.api, *self.workers])

    def logs_in_full(self) -> str:
        return "\n".join(s.log.read_text() for s in [self.api, *self.workers])

    def wait_api(self) -> None:
        wait_healthy(self.url, self.api)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    postgres, redis, receiver = Postgres(), Redis(), WebhookReceiver()
    postgres.start()
    redis.start()
    upgrade(postgres.url)
    built = Stack(postgres, redis, receiver)
    built.api.start()
    for worker in built.workers:
        worker.start()
    try:
        built.wait_api()
        yield built
    finally:
        for service in [built.api, *built.workers]:
            service.stop()
        receiver.close()
        redis.remove()
        postgres.remove()


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(stack.postgres.url.replace("+asyncpg", ""))
    yield connection
    await connection.close()


def _task(n: int, receiver: WebhookReceiver | None = None) -> dict[str, Any]:
    payload = {"prompt": f"Count from {n}:", "max_tokens": 12, "temperature": 0}
    body: dict[str, Any] = {"kind": "generate", "payload": payload}
    if receiver is not None:
        body["webhook_url"] = receiver.url
    return body


async def _wait_all(stack: Stack, db: asyncpg.Connection, ids: list[str], within: float = 300) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done = await db.fetchval("SELECT count(*) FROM tasks WHERE id = ANY($1) AND status = 'completed'", ids)
        if done == len(ids):
            return
        await asyncio.sleep(0.25)
    states = await db.fetch("SELECT status, count(*) FROM tasks WHERE id = ANY($1) GROUP BY status", ids)
    raise AssertionError(f"not all {len(ids)} tasks completed: {[tuple(s) for s in states]}\n{stack.logs()}")


async def test_200_tasks_across_two_workers_one_killed_mid_run(stack: Stack, db: asyncpg.Connection) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        ids = [(await client.post("/api/v1/tasks", json=_task(n, stack.receiver))).json()["id"] for n in range(200)]
    # Let both workers get going, then kill one of them in the middle of its tasks.
    deadline = time.monotonic() + 240
    while await db.fetchval("SELECT count(*) FROM tasks WHERE id = ANY($1) AND status = 'completed'", ids) < 60:
        assert time.monotonic() < deadline, stack.logs()
        await asyncio.sleep(0.1)
    victim = stack.workers[0]
    victim_owner = f"-{victim.pid}-"
    victim.kill()
    await asyncio.sleep(0.5)  # a COMMIT it sent just before dying lands
    interrupted = {
        r["id"]
        for r in await db.fetch(
            "SELECT id FROM tasks WHERE id = ANY($1) AND status = 'processing' AND lease_owner LIKE $2",
            ids,
            f"%{victim_owner}%",
        )
    }
    assert interrupted, "the killed worker was running nothing; the test proves nothing"
    victim.start()

    await _wait_all(stack, db, ids)
    rows = await db.fetch(
        "SELECT id, attempts, lease_owner, webhook_attempts, webhook_sent_at FROM tasks WHERE id = ANY($1)", ids
    )
    more_than_once = {r["id"] for r in rows if r["attempts"] > 1}
    assert more_than_once == interrupted
    assert all(victim_owner not in r["lease_owner"] for r in rows if r["id"] in interrupted)  # others finished them
    # The completion side effect, keyed by task id: one webhook per task. Deliveries are at-least-once, so a repeat
    # is possible only where the finisher died between delivering and recording it and a sweeper sent it again.
    deadline = time.monotonic() + 60
    while len(stack.receiver.deliveries.keys() & set(ids)) < len(ids):
        assert time.monotonic() < deadline, f"webhooks missing for {len(set(ids) - stack.receiver.deliveries.keys())}"
        await asyncio.sleep(0.2)
    resent = {r["id"] for r in rows if r["webhook_attempts"] > 1}
    repeated = {i for i in ids if stack.receiver.count(i) > 1}
    assert repeated <= resent
    assert all(victim_owner in r["lease_owner"] for r in rows if r["id"] in resent)
    print(f"200 tasks: {len(interrupted)} interrupted by the kill, {len(repeated)} webhook(s) repeated")
    assert all(stack.receiver.bodies[i]["status"] == "completed" for i in ids)


async def test_restarting_the_api_loses_no_task(stack: Stack, db: asyncpg.Connection) -> None:
    accepted: list[str] = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        for n in range(20):
            accepted.append((await client.post("/api/v1/tasks", json=_task(n))).json()["id"])
        stack.api.kill()
        stack.api.start()
        stack.wait_api()
        for n in range(20):
            accepted.append((await client.post("/api/v1/tasks", json=_task(n))).json()["id"])
    await _wait_all(stack, db, accepted)


async def test_postgres_stopped_during_load_is_a_quick_503_and_loses_nothing(
    stack: Stack, db: asyncpg.Connection
) -> None:
    accepted: list[str] = []
    refused: list[float] = []
    stop = asyncio.Event()

    async def submit() -> None:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
            n = 0
            while not stop.is_set():
                started = time.monotonic()
                response = await client.post("/api/v1/tasks", json=_task(n))
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                else:
                    assert response.status_code == 503, response.text
                    assert response.headers["Retry-After"]
                    refused.append(time.monotonic() - started)
                n += 1
                await asyncio.sleep(0.05)

    await db.close()
    load = asyncio.create_task(submit())
    await asyncio.sleep(2)
    stack.postgres.stop()
    await asyncio.sleep(5)
    stack.postgres.start()
    await asyncio.sleep(3)
    stop.set()
    await load
    assert refused, "no request was refused while PostgreSQL was down"
    assert max(refused) < 3, f"slowest 503 took {max(refused):.2f} s"
    print(f"PostgreSQL down: {len(refused)} x 503, slowest {max(refused):.3f} s; {len(accepted)} accepted")
    connection = await asyncpg.connect(stack.postgres.url.replace("+asyncpg", ""))
    try:
        await _wait_all(stack, connection, accepted)
    finally:
        await connection.close()


async def test_tasks_accepted_while_the_broker_is_unreachable_still_run(stack: Stack, db: asyncpg.Connection) -> None:
    stack.redis.pause()
    accepted: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
            for n in range(5):
                started = time.monotonic()
                response = await client.post("/api/v1/tasks", json=_task(n))
                assert response.status_code == 202, response.text
                assert time.monotonic() - started < 3  # BROKER_TIMEOUT=1: no hang
                accepted.append(response.json()["id"])
    finally:
        stack.redis.resume()
    assert "broker unreachable" in stack.api.log.read_text()  # nothing was handed over; the sweepers will
    await _wait_all(stack, db, accepted, within=120)
    # A broker restart: the stream survives (append-only file); the workers reconnect on their own.
    stack.redis.stop()
    stack.redis.start()
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        after = [(await client.post("/api/v1/tasks", json=_task(n))).json()["id"] for n in range(5)]
    await _wait_all(stack, db, after, within=120)
    # A broker that comes back empty (no persistence): the consumer group is gone; the workers create it again.
    stack.redis.stop()
    stack.redis.wipe()
    stack.redis.start()
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        emptied = [(await client.post("/api/v1/tasks", json=_task(n))).json()["id"] for n in range(5)]
    await _wait_all(stack, db, emptied, within=120)


async def test_cancelling_reaches_the_worker_running_the_generation(stack: Stack, db: asyncpg.Connection) -> None:
    body = {"kind": "generate", "payload": {"prompt": "1, 2, 3,", "max_tokens": 1500, "temperature": 0}}
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        task_id = (await client.post("/api/v1/tasks", json=body)).json()["id"]
        deadline = time.monotonic() + 60
        while (await client.get(f"/api/v1/tasks/{task_id}")).json()["status"] != "processing":
            assert time.monotonic() < deadline, stack.logs()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # well into its 1500 tokens
        assert (await client.delete(f"/api/v1/tasks/{task_id}")).json()["status"] == "cancelled"
    deadline = time.monotonic() + 5
    while f"task {task_id} is no longer ours" not in stack.logs_in_full():
        assert time.monotonic() < deadline, "no worker stopped the cancelled generation"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)  # a finishing runner could not overwrite the cancellation
    row = await db.fetchrow("SELECT status, result FROM tasks WHERE id = $1", task_id)
    assert row["status"] == "cancelled"
    assert row["result"] is None


async def test_2000_line_embeddings_batch_across_two_workers_one_killed_mid_run(
    stack: Stack, db: asyncpg.Connection
) -> None:
    lines = [
        {
            "custom_id": f"line-{n}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "all-minilm-l6-v2", "input": f"Sentence {n} of the nightly job, about item {n * 13}."},
        }
        for n in range(2000)
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        upload = await client.post("/v1/files", files={"file": ("nightly.jsonl", content)}, data={"purpose": "batch"})
        batch = (
            await client.post("/v1/batches", json={"input_file_id": upload.json()["id"], "endpoint": "/v1/embeddings"})
        ).json()
        assert batch["status"] == "in_progress", batch
        chunks = f"{batch['id']}/%"
        held = (
            "SELECT count(*) FROM tasks WHERE idempotency_key LIKE $1 AND status = 'processing' AND lease_owner LIKE $2"
        )
        # Kill a worker while it runs one of the batch's chunks, after some lines are done. A chunk can end in the
        # instant between seeing it run and the kill: then the kill interrupted nothing, and it is tried again.
        victim = stack.workers[0]
        interrupted: set[str] = set()
        for _ in range(5):
            victim_owner = f"-{victim.pid}-"
            deadline = time.monotonic() + 240
            while True:
                assert time.monotonic() < deadline, f"the victim never ran a chunk\n{stack.logs()}"
                done = await db.fetchval(
                    "SELECT count(*) FROM batch_lines WHERE batch_id = $1 AND finished_at IS NOT NULL", batch["id"]
                )
                assert done < 2000, "the batch finished before a worker could be killed; the test proves nothing"
                if done > 0 and await db.fetchval(held, chunks, f"%{victim_owner}%"):
                    break
                await asyncio.sleep(0.02)
            victim.kill()
            await asyncio.sleep(0.5)  # a COMMIT it sent just before dying lands
            interrupted = {r["id"] for r in await db.fetch(held.replace("count(*)", "id"), chunks, f"%{victim_owner}%")}
            victim.start()
            if interrupted:
                break
        assert interrupted, "five kills interrupted no chunk; the test proves nothing"

        deadline = time.monotonic() + 300
        while (batch := (await client.get(f"/v1/batches/{batch['id']}")).json())["status"] != "completed":
            assert batch["status"] in ("in_progress", "finalizing"), batch
            assert time.monotonic() < deadline, f"{batch}\n{stack.logs()}"
            await asyncio.sleep(0.25)
        assert batch["request_counts"] == {"total": 2000, "completed": 2000, "failed": 0}
        assert batch["error_file_id"] is None
        output = (await client.get(f"/v1/files/{batch['output_file_id']}/content")).text.splitlines()
    ids = [json.loads(line)["custom_id"] for line in output]
    assert len(ids) == 2000 and set(ids) == {f"line-{n}" for n in range(2000)}
    attempts = {
        r["id"]: r["attempts"]
        for r in await db.fetch("SELECT id, attempts FROM tasks WHERE idempotency_key LIKE $1", chunks)
    }
    assert all(attempts[task_id] > 1 for task_id in interrupted)  # run again by a live worker
    print(f"2,000-line batch: {len(attempts)} chunks, {len(interrupted)} interrupted by the kill")

"""Background tasks through PostgreSQL + Redis Streams with two `sop-llm worker` processes: tasks per second from
the first POST to the last completion, for a light job (similarity) and a generation job. PostgreSQL and
redis-server are started on free ports for the run, as the system tests do."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import asyncpg
import httpx
from tests.system.servers import Postgres, Redis

from bench.service import Service
from sop_llm.migrations import upgrade

JOBS: dict[str, dict[str, Any]] = {
    "similarity": {"kind": "similarity", "payload": {"text1": "a cat on a mat", "text2": "a kitten on a rug"}},
    "generate": {"kind": "generate", "payload": {"prompt": "Count to five:", "max_tokens": 8, "temperature": 0}},
}


async def _drain(url: str, database: str, body: dict[str, Any], count: int) -> dict[str, float]:
    connection = await asyncpg.connect(database)
    try:
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            semaphore = asyncio.Semaphore(16)

            async def submit() -> str:
                async with semaphore:
                    response = await client.post("/api/v1/tasks", json=body)
                    response.raise_for_status()
                    return str(response.json()["id"])

            ids = await asyncio.gather(*(submit() for _ in range(count)))
        submitted = time.perf_counter() - started
        query = "SELECT count(*) FROM tasks WHERE id = ANY($1) AND status IN ('completed', 'failed')"
        while await connection.fetchval(query, ids) < count:  # noqa: ASYNC110 - the database is what we measure
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        failed = await connection.fetchval("SELECT count(*) FROM tasks WHERE id = ANY($1) AND status = 'failed'", ids)
    finally:
        await connection.close()
    return {
        "tasks": count,
        "seconds": elapsed,
        "tasks_per_s": count / elapsed,
        "submit_per_s": count / submitted,
        "failed": failed,
    }


def run(count: int = 400) -> dict[str, Any]:
    postgres, redis = Postgres(), Redis()
    postgres.start()
    redis.start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(postgres.url)
        env = {
            "DATABASE_URL": postgres.url,
            "DATABASE_AUTO_MIGRATE": "false",
            "BROKER_URL": redis.url,
            "LLAMA_N_THREADS": "1",  # two workers on this machine's cores (docs/tasks.md, several workers)
            "TASKS_CONCURRENCY": "4",
        }
        worker_env = {**os.environ, "LOG_LEVEL": "WARNING", **env}
        workers = [subprocess.Popen([sys.executable, "-m", "sop_llm", "worker"], env=worker_env) for _ in range(2)]
        database = postgres.url.replace("+asyncpg", "")
        with Service(**env) as service:
            asyncio.run(_drain(service.url, database, JOBS["similarity"], 20))  # both workers loaded and ready
            results = {name: asyncio.run(_drain(service.url, database, body, count)) for name, body in JOBS.items()}
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(30)
        redis.remove()
        postgres.remove()
    return results

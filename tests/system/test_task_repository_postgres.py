"""The task repository against a real PostgreSQL that this test starts (and stops) itself on a free port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from sop_llm.infra.database import create_engine, session_factory
from sop_llm.infra.errors import ServiceUnavailableError
from sop_llm.migrations import upgrade
from sop_llm.services.tasks.model import TaskStatus
from sop_llm.services.tasks.repository import TaskRepository
from tests.live_server import make_settings
from tests.system.servers import Postgres

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    upgrade(server.url)
    yield server
    server.remove()


@pytest.fixture
async def repository(postgres: Postgres) -> AsyncIterator[TaskRepository]:
    engine = create_engine(make_settings(DATABASE_URL=postgres.url, DATABASE_TIMEOUT=2))
    yield TaskRepository(session_factory(engine))
    await engine.dispose()


async def test_only_one_runner_can_claim_a_task(repository: TaskRepository) -> None:
    row, _ = await repository.create("embeddings", {"texts": ["x"]}, 3)
    claims = await asyncio.gather(*(repository.claim(row.id, f"runner-{i}", 30) for i in range(10)))
    assert sum(claims) == 1
    task = await repository.get(row.id)
    assert task.status == TaskStatus.PROCESSING
    assert task.attempts == 1


async def test_completion_is_guarded_by_the_lease(repository: TaskRepository) -> None:
    row, _ = await repository.create("embeddings", {"texts": ["x"]}, 3)
    assert await repository.claim(row.id, "a", 30)
    assert not await repository.finish(row.id, "b", TaskStatus.COMPLETED, result={"by": "b"})  # not b's lease
    assert await repository.finish(row.id, "a", TaskStatus.COMPLETED, result={"by": "a"})
    assert not await repository.finish(row.id, "a", TaskStatus.COMPLETED, result={"again": True})  # only once
    assert (await repository.get(row.id)).result == {"by": "a"}


async def test_expired_leases_are_requeued_and_exhausted_tasks_fail(repository: TaskRepository) -> None:
    row, _ = await repository.create("embeddings", {"texts": ["x"]}, 2)
    assert await repository.claim(row.id, "dead-worker", 0.05)
    await asyncio.sleep(0.2)
    assert await repository.requeue_expired() >= 1
    assert (await repository.get(row.id)).status == TaskStatus.PENDING
    assert await repository.claim(row.id, "dead-again", 0.05)  # attempt 2 of 2
    await asyncio.sleep(0.2)
    await repository.requeue_expired()
    assert await repository.fail_exhausted() >= 1
    task = await repository.get(row.id)
    assert task.status == TaskStatus.FAILED
    assert task.attempts == 2


async def test_idempotency_key_under_concurrency(repository: TaskRepository) -> None:
    results = await asyncio.gather(
        *(repository.create("embeddings", {"texts": ["x"]}, 3, idempotency_key="same-key") for _ in range(8))
    )
    assert len({row.id for row, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_postgres_down_is_a_quick_503_and_recovers(postgres: Postgres, repository: TaskRepository) -> None:
    row, _ = await repository.create("embeddings", {"texts": ["x"]}, 3)
    postgres.stop()
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError):
            await repository.get(row.id)
        assert time.monotonic() - started < 5  # DATABASE_TIMEOUT=2: no hang
    finally:
        postgres.start()
    assert (await repository.get(row.id)).id == row.id  # nothing accepted was lost

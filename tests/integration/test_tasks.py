"""Background tasks on the embedded defaults: SQLite and the in-process runner."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import httpx
import pytest

from tests.fakes.webhook_receiver import WebhookReceiver
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def _wait(url: str, task_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = httpx.get(f"{url}/api/v1/tasks/{task_id}").json()
        if task["status"] in statuses:
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} stayed {task['status']}")


@pytest.mark.parametrize(
    ("kind", "payload", "check"),
    [
        (
            "generate",
            {"prompt": "1, 2, 3,", "max_tokens": 6, "temperature": 0},
            lambda r: r["usage"]["completion_tokens"] == 6,
        ),
        (
            "generate",
            {"prompt": "A person:", "json_schema": PERSON, "max_tokens": 40},
            lambda r: "name" in r["json"]["value"],
        ),
        ("embeddings", {"texts": ["a", "b"]}, lambda r: len(r["embeddings"]) == 2 and len(r["embeddings"][0]) == 384),
        ("similarity", {"text1": "cat", "text2": "kitten"}, lambda r: 0 < r["similarity"] <= 1),
        ("json_fix", {"text": "{'name': 'Bob',}", "schema": PERSON}, lambda r: r["value"] == {"name": "Bob"}),
    ],
    ids=["generate", "generate-json", "embeddings", "similarity", "json_fix"],
)
def test_every_kind_of_job_runs(base_url: str, kind: str, payload: dict, check: Any) -> None:
    created = httpx.post(f"{base_url}/api/v1/tasks", json={"kind": kind, "payload": payload})
    assert created.status_code == 202
    task = created.json()
    assert task["status"] == "pending"
    done = _wait(base_url, task["id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    assert check(done["result"])
    assert done["attempts"] == 1
    assert done["started_at"] is not None
    assert done["finished_at"] >= done["started_at"]


def test_idempotency_key_returns_the_same_task(base_url: str) -> None:
    body = {"kind": "embeddings", "payload": {"texts": ["same"]}, "idempotency_key": "once-123"}
    first = httpx.post(f"{base_url}/api/v1/tasks", json=body)
    second = httpx.post(f"{base_url}/api/v1/tasks", json=body)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]


def test_list_filters_and_pagination(base_url: str) -> None:
    ids = [
        httpx.post(
            f"{base_url}/api/v1/tasks", json={"kind": "similarity", "payload": {"text1": "a", "text2": str(i)}}
        ).json()["id"]
        for i in range(3)
    ]
    for task_id in ids:
        _wait(base_url, task_id, {"completed"})
    page = httpx.get(
        f"{base_url}/api/v1/tasks", params={"kind": "similarity", "status": "completed", "limit": 2}
    ).json()
    assert page["total"] >= 3
    assert len(page["tasks"]) == 2
    assert all(t["kind"] == "similarity" and t["status"] == "completed" for t in page["tasks"])
    second = httpx.get(f"{base_url}/api/v1/tasks", params={"kind": "similarity", "limit": 2, "offset": 2}).json()
    assert {t["id"] for t in page["tasks"]}.isdisjoint({t["id"] for t in second["tasks"]})


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        ({"kind": "generate", "payload": {"max_tokens": 5}}, 422, "payload"),
        ({"kind": "generate", "payload": {"prompt": "x", "stream": True}}, 400, "cannot stream"),
        ({"kind": "dance", "payload": {}}, 422, "kind"),
        ({"kind": "embeddings", "payload": {"texts": []}}, 422, "payload.texts"),
        ({"kind": "embeddings", "payload": {"texts": ["a"]}, "webhook_url": "ftp://x"}, 422, "webhook_url"),
    ],
)
def test_bad_task_requests(base_url: str, body: dict, status: int, mentions: str) -> None:
    response = httpx.post(f"{base_url}/api/v1/tasks", json=body)
    assert response.status_code == status, response.text
    assert mentions in response.json()["error"]["message"]


def test_unknown_task_is_404(base_url: str) -> None:
    assert httpx.get(f"{base_url}/api/v1/tasks/nope").status_code == 404
    assert httpx.delete(f"{base_url}/api/v1/tasks/nope").status_code == 404


def test_cancelling_a_running_generation_stops_it(server: LiveServer) -> None:
    before = server.model_stats("smollm2-135m")
    payload = {"prompt": "1, 2, 3, 4, 5,", "max_tokens": 1500, "temperature": 0}
    task = httpx.post(f"{server.url}/api/v1/tasks", json={"kind": "generate", "payload": payload}).json()
    _wait(server.url, task["id"], {"processing"})
    deadline = time.monotonic() + 30
    while server.model_stats("smollm2-135m")["tokens_generated"] - before["tokens_generated"] < 20:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    cancelled = httpx.delete(f"{server.url}/api/v1/tasks/{task['id']}").json()
    assert cancelled["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while (stats := server.model_stats("smollm2-135m"))["active"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert stats["cancelled"] == before["cancelled"] + 1
    assert stats["tokens_generated"] - before["tokens_generated"] < 500  # of 1500 asked for
    time.sleep(0.3)
    assert httpx.get(f"{server.url}/api/v1/tasks/{task['id']}").json()["status"] == "cancelled"


@pytest.mark.slow
def test_tasks_survive_a_restart() -> None:
    database = f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='sop-llm-restart-')}/tasks.db"
    settings = {"DATABASE_URL": database, "TASKS_CONCURRENCY": 1}
    first = LiveServer(make_settings(**settings)).start()
    payload = {"prompt": "1, 2, 3,", "max_tokens": 40, "temperature": 0}
    ids = [
        httpx.post(f"{first.url}/api/v1/tasks", json={"kind": "generate", "payload": payload}).json()["id"]
        for _ in range(6)
    ]
    first.stop()  # most of them are still pending; one may be running, and is handed back
    second = LiveServer(make_settings(**settings)).start()
    try:
        for task_id in ids:
            done = _wait(second.url, task_id, {"completed", "failed"})
            assert done["status"] == "completed"
            assert done["attempts"] <= 2
    finally:
        second.stop()


def test_webhook_is_delivered_once_with_the_task(base_url: str) -> None:
    receiver = WebhookReceiver()
    try:
        body = {"kind": "embeddings", "payload": {"texts": ["a"]}, "webhook_url": receiver.url}
        task = httpx.post(f"{base_url}/api/v1/tasks", json=body).json()
        done = _wait(base_url, task["id"], {"completed"})
        deadline = time.monotonic() + 10
        while receiver.count(task["id"]) == 0:
            assert time.monotonic() < deadline, "the webhook never arrived"
            time.sleep(0.02)
        assert receiver.bodies[task["id"]]["status"] == "completed"
        assert len(receiver.bodies[task["id"]]["result"]["embeddings"]) == 1
        time.sleep(0.5)
        assert receiver.count(task["id"]) == 1
        shown = _wait(base_url, task["id"], {"completed"})["webhook"]
        assert shown["attempts"] == 1
        assert shown["delivered_at"] is not None
        assert done["worker"]  # the runner that finished it
    finally:
        receiver.close()


@pytest.mark.slow
def test_a_refused_webhook_is_retried_by_the_sweeper() -> None:
    # The lease time is also the webhook's grace time: the retry comes ~1 s after the refused first delivery.
    server = LiveServer(make_settings(TASKS_LEASE_SECONDS=1)).start()
    receiver = WebhookReceiver(refuse_first=1)
    try:
        body = {"kind": "similarity", "payload": {"text1": "a", "text2": "b"}, "webhook_url": receiver.url}
        task = httpx.post(f"{server.url}/api/v1/tasks", json=body).json()
        deadline = time.monotonic() + 30
        while receiver.count(task["id"]) == 0:
            assert time.monotonic() < deadline, "the webhook was not retried"
            time.sleep(0.05)
        assert receiver.refused == 1
        shown = _wait(server.url, task["id"], {"completed"})["webhook"]
        assert shown["attempts"] == 2
        assert shown["delivered_at"] is not None
    finally:
        receiver.close()
        server.stop()

"""The Batch API through the official `openai` SDK, unmodified: upload a JSONL file, create a batch, poll it, download
its output and error files. Embedding and chat batches run on the real local models; every custom_id must come
back exactly once, a malformed line must land in the error file while the rest completes, and a cancelled batch
must stop within 2 seconds and keep what it had done. Also the Files API itself and clear 4xx errors."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

TERMINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = LiveServer(make_settings(LLM_MAX_QUEUED_REQUESTS=64, BATCH_CONCURRENCY=2)).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def jsonl(lines: list[dict[str, Any] | str]) -> bytes:
    return b"".join((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines)


def upload(client: openai.OpenAI, content: bytes, name: str = "requests.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(content)), purpose="batch").id


def wait_done(client: openai.OpenAI, batch_id: str, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        time.sleep(0.25)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout} s: {batch.request_counts}")


def results(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def embedding_line(i: int) -> dict[str, Any]:
    text = f"Batch sentence {i}: the {['red', 'green', 'blue', 'grey'][i % 4]} fox counts to {i * 7}."
    return {
        "custom_id": f"emb-{i}",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "all-minilm-l6-v2", "input": text, "encoding_format": "float"},
    }


def chat_line(i: int, model: str = "smollm2-135m", max_tokens: int = 8) -> dict[str, Any]:
    return {
        "custom_id": f"chat-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "messages": [{"role": "user", "content": f"Say a word about the number {i}."}],
        },
    }


def test_embeddings_batch_of_1000_lines_with_a_malformed_one(client: openai.OpenAI, server: LiveServer) -> None:
    lines: list[dict[str, Any] | str] = [embedding_line(i) for i in range(1000)]
    lines.insert(500, '{"custom_id": "broken", "method": "POST", "url": "/v1/embeddings", "body": {')
    file_id = upload(client, jsonl(lines))
    created = client.batches.create(
        input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h", metadata={"job": "nightly"}
    )
    assert created.status == "in_progress" and created.request_counts is not None
    assert created.request_counts.total == 1001
    batch = wait_done(client, created.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1000, 1)
    assert batch.metadata == {"job": "nightly"}
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [("invalid_json", 501)]

    output = results(client, batch.output_file_id)
    ids = [line["custom_id"] for line in output]
    assert sorted(ids) == sorted(f"emb-{i}" for i in range(1000)) and len(set(ids)) == 1000
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in output)
    errors = results(client, batch.error_file_id)
    assert len(errors) == 1 and errors[0]["response"] is None and errors[0]["error"]["code"] == "invalid_json"

    # A batch line gets the same vector as the same request sent alone.
    probe = next(line for line in output if line["custom_id"] == "emb-123")
    alone = httpx.post(f"{server.url}/v1/embeddings", json=embedding_line(123)["body"]).json()
    a, b = np.array(probe["response"]["body"]["data"][0]["embedding"]), np.array(alone["data"][0]["embedding"])
    assert len(a) == 384 and float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.9999


def test_chat_batch_of_50_lines_answers_each_once(client: openai.OpenAI, server: LiveServer) -> None:
    lines: list[dict[str, Any] | str] = [chat_line(i) for i in range(50)]
    lines.append(chat_line(50, model="no-such-model"))
    lines.append({**chat_line(51), "url": "/v1/embeddings"})
    lines.append({**chat_line(0)})  # the custom_id of line 1 again
    batch = wait_done(
        client,
        client.batches.create(
            input_file_id=upload(client, jsonl(lines)), endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (53, 50, 3)
    output = results(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"chat-{i}" for i in range(50))
    for line in output:
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and line["response"]["request_id"] == body["id"]
        assert body["choices"][0]["message"]["content"] and body["usage"]["completion_tokens"] <= 8
    errors = {line["custom_id"]: line for line in results(client, batch.error_file_id)}
    # Once ended, a batch's outcomes live in its files: its line rows are gone, its counts stay on the batch.
    import sqlite3

    database = server.app.state.services.settings.database_url.split("///", 1)[1]
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM batch_lines WHERE batch_id = ?", (batch.id,)).fetchone() == (0,)
    assert client.batches.retrieve(batch.id).request_counts == batch.request_counts
    assert errors["chat-50"]["response"]["status_code"] == 404
    assert errors["chat-50"]["response"]["body"]["error"]["code"] == "model_not_found"
    assert errors["chat-51"]["error"]["code"] == "mismatched_url"
    assert errors["chat-0"]["error"]["code"] == "duplicate_custom_id"


def test_completions_and_responses_batches(client: openai.OpenAI) -> None:
    prompts = [
        {
            "custom_id": f"c-{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "smollm2-135m", "prompt": f"{i}, {i + 1},", "max_tokens": 4},
        }
        for i in range(3)
    ]
    replies = [
        {
            "custom_id": f"r-{i}",
            "method": "POST",
            "url": "/v1/responses",
            "body": {
                "model": "smollm2-135m",
                "input": f"Name the number {i}.",
                "max_output_tokens": 16,
                "store": False,
            },
        }
        for i in range(3)
    ]
    for endpoint, lines, kind in (
        ("/v1/completions", prompts, "text_completion"),
        ("/v1/responses", replies, "response"),
    ):
        batch = wait_done(
            client,
            client.batches.create(
                input_file_id=upload(client, jsonl(list(lines))),
                endpoint=endpoint,
                completion_window="24h",  # type: ignore[arg-type]
            ).id,
        )
        assert batch.status == "completed" and batch.error_file_id is None, batch
        output = results(client, batch.output_file_id)
        assert sorted(line["custom_id"] for line in output) == sorted(line["custom_id"] for line in lines)
        assert {line["response"]["body"]["object"] for line in output} == {kind}


def test_cancel_stops_within_2_seconds_and_keeps_the_partial_output(client: openai.OpenAI) -> None:
    lines: list[dict[str, Any] | str] = [chat_line(i, max_tokens=48) for i in range(300)]
    created = client.batches.create(
        input_file_id=upload(client, jsonl(lines)), endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 300
    while (client.batches.retrieve(created.id).request_counts.completed or 0) < 3:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    time.sleep(2)
    settled = client.batches.retrieve(created.id).request_counts
    time.sleep(3)
    batch = client.batches.retrieve(created.id)
    assert batch.request_counts == settled, "lines still ran more than 2 s after the cancel"
    batch = wait_done(client, created.id, timeout=30)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.request_counts is not None and 3 <= batch.request_counts.completed < 300
    assert batch.request_counts == settled  # the lines never run are in neither file nor count
    assert batch.error_file_id is None
    output = results(client, batch.output_file_id)
    assert len(output) == batch.request_counts.completed
    assert len({line["custom_id"] for line in output}) == len(output)
    with pytest.raises(openai.BadRequestError, match="cannot be cancelled"):
        client.batches.cancel(created.id)


def test_files_api(client: openai.OpenAI, server: LiveServer) -> None:
    content = jsonl([embedding_line(1), embedding_line(2)])
    uploaded = client.files.create(file=("two.jsonl", io.BytesIO(content)), purpose="batch")
    assert (uploaded.object, uploaded.purpose, uploaded.bytes, uploaded.filename) == (
        "file",
        "batch",
        len(content),
        "two.jsonl",
    )
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert client.files.content(uploaded.id).content == content
    assert uploaded.id in [f.id for f in client.files.list(purpose="batch")]
    page = client.files.list(limit=1, order="asc")
    assert len(page.data) == 1
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nothing")


@pytest.mark.parametrize(
    ("request_kwargs", "expect"),
    [
        ({"files": {"file": ("x.jsonl", b"{}\n")}, "data": {"purpose": "fine-tune"}}, "purpose"),
        ({"files": {"file": ("x.jsonl", b"")}, "data": {"purpose": "batch"}}, "is empty"),
        ({"data": {"purpose": "batch"}, "files": {"other": ("x.jsonl", b"{}\n")}}, "file: missing"),
        ({"json": {"purpose": "batch"}}, "multipart/form-data"),
    ],
)
def test_bad_uploads_are_400(server: LiveServer, request_kwargs: dict[str, Any], expect: str) -> None:
    answer = httpx.post(f"{server.url}/v1/files", **request_kwargs)
    assert answer.status_code == 400, answer.text
    assert expect in answer.json()["error"]["message"]


def test_bad_batches_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="input_file_id"):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="file-x", endpoint="/v1/moderations", completion_window="24h")  # type: ignore[arg-type]
    only_bad = upload(client, b"not json\n[1, 2]\n")
    failed = client.batches.create(input_file_id=only_bad, endpoint="/v1/embeddings", completion_window="24h")
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data is not None
    assert [e.line for e in failed.errors.data] == [1, 2]
    with pytest.raises(openai.BadRequestError, match="after"):
        client.batches.list(after="batch_unknown")


def test_large_upload_is_413_naming_the_setting(tmp_path: Any) -> None:
    live = LiveServer(make_settings(FILES_MAX_BYTES=2048)).start(wait_ready=False)
    try:
        answer = httpx.post(
            f"{live.url}/v1/files", files={"file": ("big.jsonl", b"x" * 5000)}, data={"purpose": "batch"}
        )
        assert answer.status_code == 413 and "FILES_MAX_BYTES" in answer.json()["error"]["message"]
    finally:
        live.stop()


def test_cli_submits_follows_and_downloads(server: LiveServer, tmp_path: Any) -> None:
    import subprocess
    import sys
    from pathlib import Path

    source = Path(tmp_path) / "nightly.jsonl"
    source.write_bytes(jsonl([embedding_line(i) for i in range(40)] + ["oops"]))
    submit = subprocess.run(
        [
            sys.executable,
            "-m",
            "sop_llm",
            "batches",
            "submit",
            str(source),
            "--endpoint",
            "/v1/embeddings",
            "--url",
            server.url,
            "--metadata",
            "team=search",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert submit.returncode == 0, submit.stderr
    assert "completed" in submit.stdout and "41 total, 40 completed, 1 failed" in submit.stdout
    assert "line 41: is not valid JSON" in submit.stdout
    assert "41/41" in submit.stderr  # the progress bar reached the end
    batch_id = submit.stdout.split()[0]
    download = subprocess.run(
        [
            sys.executable,
            "-m",
            "sop_llm",
            "batches",
            "download",
            batch_id,
            "--url",
            server.url,
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert download.returncode == 0, download.stderr
    output = (Path(tmp_path) / f"{batch_id}_output.jsonl").read_text().splitlines()
    errors = (Path(tmp_path) / f"{batch_id}_errors.jsonl").read_text().splitlines()
    assert (len(output), len(errors)) == (40, 1)
    missing = subprocess.run(
        [sys.executable, "-m", "sop_llm", "batches", "status", "batch_none", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "404" in missing.stderr


async def test_progress_shows_in_metrics_and_the_dashboard_feed(client: openai.OpenAI, server: LiveServer) -> None:
    import asyncio

    import websockets
    from prometheus_client.parser import text_string_to_metric_families

    lines: list[dict[str, Any] | str] = [chat_line(i, max_tokens=32) for i in range(100)]
    batch_id = client.batches.create(
        input_file_id=upload(client, jsonl(lines)), endpoint="/v1/chat/completions", completion_window="24h"
    ).id
    try:
        url = server.url.replace("http://", "ws://") + "/api/v1/monitoring/ws"
        async with websockets.connect(url) as socket, asyncio.timeout(60):  # the feed refreshes batches every 2 s
            while True:
                snapshot = json.loads(await socket.recv())
                active = {b["id"]: b for b in snapshot["batches"]["active"]}
                if batch_id in active and active[batch_id]["completed"] > 0:
                    break
        assert active[batch_id]["total"] == 100 and active[batch_id]["endpoint"] == "/v1/chat/completions"
        assert snapshot["batches"]["by_status"]["in_progress"] >= 1
        samples = {
            (s.name, s.labels.get("status") or s.labels.get("state")): s.value
            for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
            for s in family.samples
            if s.name in ("sop_llm_batches", "sop_llm_batch_lines")
        }
        assert samples[("sop_llm_batches", "in_progress")] >= 1
        assert samples[("sop_llm_batch_lines", "completed")] >= 1 and samples[("sop_llm_batch_lines", "waiting")] >= 1
    finally:
        client.batches.cancel(batch_id)


def test_a_batch_whose_chunks_were_lost_is_resumed_or_failed_line_by_line() -> None:
    """The process that stored a batch may die before queueing its chunks, and a chunk may fail every attempt: the
    API then queues the missing chunks itself, and fails the lines of a failed one, so every batch ends."""
    import sqlite3

    live = LiveServer(make_settings(TASKS_CONCURRENCY=1)).start()
    try:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=60)
        database = live.app.state.services.settings.database_url.split("///", 1)[1]
        # Keep the only task slot busy, so the batches' chunk tasks stay queued while the test takes them away.
        busy = httpx.post(
            f"{live.url}/api/v1/tasks",
            json={"kind": "generate", "payload": {"prompt": "Tell a long story:", "max_tokens": 400}},
        ).json()["id"]
        lost, failed = (
            client.batches.create(
                input_file_id=upload(client, jsonl([embedding_line(i) for i in range(20)])),
                endpoint="/v1/embeddings",
                completion_window="24h",
            ).id
            for _ in range(2)
        )
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT status FROM tasks WHERE id = ?", (busy,)).fetchone() == ("processing",)
            gone = db.execute("DELETE FROM tasks WHERE idempotency_key LIKE ? AND status = 'pending'", (f"{lost}/%",))
            broken = db.execute(
                "UPDATE tasks SET status = 'failed', error = ? WHERE idempotency_key LIKE ? AND status = 'pending'",
                ('{"code": "internal_error", "message": "worker crashed"}', f"{failed}/%"),
            )
            assert (gone.rowcount, broken.rowcount) == (1, 1)
        resumed = wait_done(client, lost, timeout=120)
        assert resumed.status == "completed" and resumed.request_counts is not None
        assert (resumed.request_counts.completed, resumed.request_counts.failed) == (20, 0)
        ended = wait_done(client, failed, timeout=120)
        assert ended.status == "completed" and ended.request_counts is not None
        assert (ended.request_counts.completed, ended.request_counts.failed) == (0, 20)
        errors = results(client, ended.error_file_id)
        assert {line["error"]["code"] for line in errors} == {"batch_line_failed"}
        assert "worker crashed" in errors[0]["error"]["message"]
    finally:
        live.stop()

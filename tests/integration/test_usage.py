"""Usage accounting and token budgets on a live server with auth on: what each key used, per model and day, as the
answers reported it (JSON and CSV, own usage for users, everyone's for admins); budgets that stop a key at its limit
with 429 `budget_exceeded`; `/metrics` and the monitoring feed for admins only, the feed opened with a single-use
ticket or a subprotocol credential — never a key in the URL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.fakes.openai_server import FakeOpenAI
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

# 20 characters: the service estimates a prompt at four characters a token, and the fake upstream counts 5.
PROMPT = "count me in, please!"


class Deployment:
    def __init__(self) -> None:
        self.upstream = FakeOpenAI().start()
        folder = Path(tempfile.mkdtemp(prefix="sop-llm-usage-"))
        (folder / "providers.yaml").write_text(
            f"""
providers:
  llamacpp: {{type: llamacpp}}
  local-embeddings: {{type: sentence_transformers}}
  fake: {{type: openai, base_url: "{self.upstream.url}", timeout: 5}}
"""
        )
        (folder / "models.yaml").write_text(
            """
models:
  smollm2-135m: {provider: llamacpp, model: "embedded:smollm2-135m-instruct", aliases: [smollm2]}
  remote: {provider: fake, model: ok}
  other: {provider: fake, model: ok}
"""
        )
        shutil.copy("config/embeddings.yaml", folder / "embeddings.yaml")
        self.database = f"sqlite+aiosqlite:///{folder}/usage.db"
        self.live = LiveServer(
            make_settings(
                CONFIG_DIR=str(folder),
                DATABASE_URL=self.database,
                AUTH_ENABLED=True,
                API_KEY_CACHE_SECONDS=0,
                BUDGET_CACHE_SECONDS=0,
                METRICS_PUBLIC=False,
            )
        ).start()
        self.url = self.live.url
        created = subprocess.run(
            [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "usage admin", "--scope", "admin"],
            env={**os.environ, "DATABASE_URL": self.database, "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            check=True,
        )
        self.admin = created.stdout.strip().splitlines()[-1]

    def key(self, name: str) -> tuple[str, str]:
        """(id, key) of a new user key."""
        made = httpx.post(f"{self.url}/api/v1/admin/keys", json={"name": name}, headers=self.auth(self.admin))
        assert made.status_code == 201, made.text
        return made.json()["id"], made.json()["key"]

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def usage(self, key: str, **params: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/api/v1/usage", params=params, headers=self.auth(key))
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def close(self) -> None:
        self.live.stop()
        self.upstream.stop()


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    running = Deployment()
    yield running
    running.close()


def _by_model(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["model"]: row for row in rows}


def test_each_keys_usage_per_model_is_what_the_answers_reported(deployment: Deployment) -> None:
    alice_id, alice = deployment.key("alice")
    _, bob = deployment.key("bob")
    client = deployment.client(alice)
    reported = {"remote": [0, 0], "smollm2-135m": [0, 0], "all-minilm-l6-v2": [0, 0]}
    for _ in range(5):
        answer = client.chat.completions.create(model="remote", messages=[{"role": "user", "content": PROMPT}])
        assert answer.usage is not None
        reported["remote"][0] += answer.usage.prompt_tokens
        reported["remote"][1] += answer.usage.completion_tokens
    for _ in range(2):
        answer = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0
        )
        assert answer.usage is not None
        reported["smollm2-135m"][0] += answer.usage.prompt_tokens
        reported["smollm2-135m"][1] += answer.usage.completion_tokens
    for text in ("one sentence to embed", "and another one"):
        vectors = client.embeddings.create(model="all-minilm-l6-v2", input=text)
        reported["all-minilm-l6-v2"][0] += vectors.usage.prompt_tokens
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    deployment.client(bob).chat.completions.create(model="remote", messages=[{"role": "user", "content": PROMPT}])

    mine = deployment.usage(alice)
    rows = _by_model(mine["data"])
    assert {row["subject"] for row in mine["data"]} == {f"key:{alice_id}"}  # bob's request is not in it
    for model, (prompt, completion) in reported.items():
        assert rows[model]["prompt_tokens"] == prompt, model
        assert rows[model]["completion_tokens"] == completion, model
        assert rows[model]["errors"] == 0
        assert rows[model]["avg_latency_ms"] > 0
    assert rows["remote"]["requests"] == 5
    assert rows["smollm2-135m"]["requests"] == 2
    assert rows["all-minilm-l6-v2"]["requests"] == 2
    assert rows["-"]["requests"] == rows["-"]["errors"] == 1  # the unknown model
    assert mine["totals"]["requests"] == 10
    assert mine["totals"]["total_tokens"] == sum(p + c for p, c in reported.values())

    # A user reads only their own; an admin reads anyone's, filtered.
    forbidden = httpx.get(f"{deployment.url}/api/v1/usage", params={"key_id": alice_id}, headers=deployment.auth(bob))
    assert forbidden.status_code == 403
    assert "admin" in forbidden.json()["error"]["message"]
    as_admin = deployment.usage(deployment.admin, key_id=alice_id, model="remote")
    assert [row["requests"] for row in as_admin["data"]] == [5]
    everyone = deployment.usage(deployment.admin)
    assert {row["subject"] for row in everyone["data"]} >= {f"key:{alice_id}"}
    assert len({row["subject"] for row in everyone["data"]}) >= 2

    exported = httpx.get(f"{deployment.url}/api/v1/usage", params={"format": "csv"}, headers=deployment.auth(alice))
    assert exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert {row["model"]: int(row["total_tokens"]) for row in table} == {
        row["model"]: row["total_tokens"] for row in mine["data"]
    }
    bad = httpx.get(
        f"{deployment.url}/api/v1/usage",
        params={"from": "2026-12-31", "to": "2026-01-01"},
        headers=deployment.auth(alice),
    )
    assert bad.status_code == 400


def test_a_stream_is_counted_when_it_ends(deployment: Deployment) -> None:
    _, carol = deployment.key("carol")
    stream = deployment.client(carol).chat.completions.create(
        model="remote",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usage) == 1
    rows = _by_model(deployment.usage(carol)["data"])
    assert rows["remote"]["requests"] == 1
    assert rows["remote"]["prompt_tokens"] + rows["remote"]["completion_tokens"] == usage[0].total_tokens


def test_background_tasks_count_for_their_owner(deployment: Deployment) -> None:
    _, dave = deployment.key("dave")
    submitted = [
        httpx.post(
            f"{deployment.url}/api/v1/tasks",
            json={"kind": kind, "payload": payload},
            headers=deployment.auth(dave),
        )
        for kind, payload in [
            ("generate", {"model": "remote", "messages": [{"role": "user", "content": PROMPT}]}),
            ("embeddings", {"model": "all-minilm-l6-v2", "texts": ["one text", "and two"]}),
        ]
    ]
    assert [task.status_code for task in submitted] == [202, 202]
    results = []
    for task in submitted:
        deadline = time.monotonic() + 60
        while (
            shown := httpx.get(
                f"{deployment.url}/api/v1/tasks/{task.json()['id']}", headers=deployment.auth(dave)
            ).json()
        )["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, shown
            time.sleep(0.05)
        assert shown["status"] == "completed", shown
        results.append(shown["result"])
    rows = _by_model(deployment.usage(dave)["data"])
    generated, embedded = results
    assert rows["remote"]["requests"] == 1
    assert rows["remote"]["prompt_tokens"] == generated["usage"]["prompt_tokens"]
    assert rows["remote"]["completion_tokens"] == generated["usage"]["completion_tokens"]
    assert rows["all-minilm-l6-v2"]["requests"] == 1
    assert rows["all-minilm-l6-v2"]["prompt_tokens"] == embedded["usage"]["prompt_tokens"] > 0
    assert set(rows) == {"remote", "all-minilm-l6-v2"}  # submitting and polling are not model requests


def _finished_task(deployment: Deployment, key: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    submitted = httpx.post(
        f"{deployment.url}/api/v1/tasks", json={"kind": kind, "payload": payload}, headers=deployment.auth(key)
    )
    assert submitted.status_code == 202, submitted.text
    deadline = time.monotonic() + 60
    url = f"{deployment.url}/api/v1/tasks/{submitted.json()['id']}"
    while (shown := httpx.get(url, headers=deployment.auth(key)).json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, shown
        time.sleep(0.05)
    task: dict[str, Any] = shown
    return task


def test_background_tasks_draw_on_their_owners_budget(deployment: Deployment) -> None:
    owner_id, owner = deployment.key("tasker")
    _budget(deployment, key_id=owner_id, tokens_per_day=35)  # five answers of 7 tokens
    generate = {"model": "remote", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}
    done = [_finished_task(deployment, owner, "generate", generate) for _ in range(6)]
    assert [task["status"] for task in done] == ["completed"] * 5 + ["failed"]
    assert [task["result"]["usage"]["total_tokens"] for task in done[:5]] == [7] * 5
    assert done[5]["error"]["code"] == "budget_exceeded", done[5]
    assert "35 tokens per day" in done[5]["error"]["message"]
    embed = _finished_task(deployment, owner, "embeddings", {"model": "all-minilm-l6-v2", "texts": ["over budget"]})
    assert embed["status"] == "failed" and embed["error"]["code"] == "budget_exceeded", embed
    listed = httpx.get(f"{deployment.url}/api/v1/admin/budgets", headers=deployment.auth(deployment.admin)).json()
    assert [b["used_today"] for b in listed["budgets"] if b["subject"] == f"key:{owner_id}"] == [35]
    # The same key over HTTP is refused too: one budget, whichever way the tokens were spent.
    with pytest.raises(openai.RateLimitError, match="35 tokens per day"):
        deployment.client(owner).chat.completions.create(**generate)


def _budget(deployment: Deployment, **body: Any) -> dict[str, Any]:
    answer = httpx.put(f"{deployment.url}/api/v1/admin/budgets", json=body, headers=deployment.auth(deployment.admin))
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def test_a_daily_budget_gives_a_key_exactly_its_tokens_then_429(deployment: Deployment) -> None:
    dave_id, dave = deployment.key("dave")
    # 14 answers of 7 tokens leave 6: the prompt (5) and one token; the last answer gets max_tokens lowered to 1.
    view = _budget(deployment, key_id=dave_id, tokens_per_day=104)
    assert view["tokens_per_day"] == 104 and view["used_today"] == 0
    client = deployment.client(dave)
    served = []
    for _ in range(16):
        try:
            answer = client.chat.completions.create(
                model="remote", messages=[{"role": "user", "content": PROMPT}], max_tokens=2
            )
        except openai.RateLimitError as exc:
            refusal = exc
            break
        assert answer.usage is not None
        served.append(answer.usage.total_tokens)
    else:
        pytest.fail("the budget never stopped the key")
    assert served == [7] * 14 + [6]
    assert refusal.response.status_code == 429
    error = refusal.response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "104 tokens per day" in error["message"] and "resets at" in error["message"]
    assert int(refusal.response.headers["retry-after"]) > 0
    assert deployment.usage(dave)["totals"]["total_tokens"] == 104
    listed = httpx.get(f"{deployment.url}/api/v1/admin/budgets", headers=deployment.auth(deployment.admin)).json()
    assert [b["used_today"] for b in listed["budgets"] if b["subject"] == f"key:{dave_id}"] == [104]
    # Embeddings draw on the same budget.
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="all-minilm-l6-v2", input="still over budget")


def test_a_model_budget_applies_to_that_model_only(deployment: Deployment) -> None:
    erin_id, erin = deployment.key("erin")
    _budget(deployment, key_id=erin_id, model="remote", tokens_per_month=14)
    client = deployment.client(erin)
    for _ in range(2):
        client.chat.completions.create(model="remote", messages=[{"role": "user", "content": PROMPT}], max_tokens=2)
    with pytest.raises(openai.RateLimitError, match="per month on model 'remote'"):
        client.chat.completions.create(model="remote", messages=[{"role": "user", "content": PROMPT}], max_tokens=2)
    client.chat.completions.create(model="other", messages=[{"role": "user", "content": PROMPT}], max_tokens=2)


def test_concurrent_requests_never_spend_more_than_the_budget(deployment: Deployment) -> None:
    frank_id, frank = deployment.key("frank")
    _budget(deployment, key_id=frank_id, tokens_per_day=50)

    async def one(client: httpx.AsyncClient) -> int:
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "remote", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2},
        )
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "budget_exceeded"
            return 0
        assert answer.status_code == 200, answer.text
        return int(answer.json()["usage"]["total_tokens"])

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=deployment.url, headers=deployment.auth(frank), timeout=30) as client:
            return await asyncio.gather(*(one(client) for _ in range(24)))

    spent = asyncio.run(burst())
    assert sum(spent) <= 50
    assert sum(spent) >= 50 - 6  # what is left is less than one request needs
    assert deployment.usage(frank)["totals"]["total_tokens"] == sum(spent)


def test_budgets_from_the_command_line(deployment: Deployment) -> None:
    grace_id, _ = deployment.key("grace")
    env = {**os.environ, "DATABASE_URL": deployment.database, "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "sop_llm", "keys", "budget", grace_id]
    shown = subprocess.run(
        [*command, "--per-day", "500", "--per-month", "9000"], env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert f"key:{grace_id}" in shown.stdout and "per day 500" in shown.stdout and "per month 9000" in shown.stdout
    removed = subprocess.run([*command, "--remove"], env=env, capture_output=True, text=True)
    assert removed.returncode == 0 and "removed" in removed.stdout
    again = subprocess.run([*command, "--remove"], env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "no budget" in again.stderr


def test_budget_admin_input_is_checked(deployment: Deployment) -> None:
    admin = deployment.auth(deployment.admin)
    url = f"{deployment.url}/api/v1/admin/budgets"
    assert httpx.put(url, json={"key_id": "x"}, headers=admin).status_code == 400  # no amount
    assert httpx.put(url, json={"tokens_per_day": 5}, headers=admin).status_code == 422  # no caller
    assert httpx.put(url, json={"key_id": "x", "tokens_per_day": 0}, headers=admin).status_code == 422
    _, user = deployment.key("not an admin")
    assert httpx.put(url, json={"key_id": "x", "tokens_per_day": 5}, headers=deployment.auth(user)).status_code == 403
    assert httpx.delete(url, params={"subject": "key:nobody"}, headers=admin).status_code == 404


def test_metrics_and_the_monitoring_feed_need_admin(deployment: Deployment) -> None:
    _, user = deployment.key("curious user")
    assert httpx.get(f"{deployment.url}/metrics").status_code == 401
    assert httpx.get(f"{deployment.url}/metrics", headers=deployment.auth(user)).status_code == 403
    scraped = httpx.get(f"{deployment.url}/metrics", headers=deployment.auth(deployment.admin))
    assert scraped.status_code == 200 and "sop_llm" in scraped.text
    assert httpx.get(f"{deployment.url}/dashboard").status_code == 200  # the page itself holds no data
    ticket_url = f"{deployment.url}/api/v1/monitoring/ticket"
    assert httpx.post(ticket_url, headers=deployment.auth(user)).status_code == 403
    assert httpx.post(ticket_url).status_code == 401
    ws = deployment.url.replace("http://", "ws://") + "/api/v1/monitoring/ws"

    async def feed() -> None:
        issued = httpx.post(ticket_url, headers=deployment.auth(deployment.admin)).json()
        assert issued["expires_in"] <= 60
        async with websockets.connect(f"{ws}?ticket={issued['ticket']}") as socket:
            snapshot = json.loads(await socket.recv())
            assert snapshot["type"] == "snapshot"
            assert snapshot["usage"]["requests"] > 0 and snapshot["usage"]["callers"]
        with pytest.raises(InvalidStatus):  # single use
            async with websockets.connect(f"{ws}?ticket={issued['ticket']}"):
                pass
        with pytest.raises(InvalidStatus):  # a key in the URL is not a credential
            async with websockets.connect(f"{ws}?token={deployment.admin}"):
                pass
        with pytest.raises(InvalidStatus):
            async with websockets.connect(ws):
                pass
        with pytest.raises(InvalidStatus):  # a user key, even in the subprotocol header
            async with websockets.connect(ws, subprotocols=["sop-llm", f"bearer.{user}"]):  # type: ignore[list-item]
                pass
        offered = ["sop-llm", f"bearer.{deployment.admin}"]
        async with websockets.connect(ws, subprotocols=offered) as socket:  # type: ignore[arg-type]
            assert socket.subprotocol == "sop-llm"
            assert json.loads(await socket.recv())["type"] == "snapshot"

    asyncio.run(feed())


def test_a_batch_runs_as_its_owner_on_their_budget_and_is_theirs_alone(deployment: Deployment) -> None:
    owner_id, owner = deployment.key("nightly job")
    _, stranger = deployment.key("stranger")
    _budget(deployment, key_id=owner_id, tokens_per_day=35)  # five answers of 7 tokens
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "remote", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2},
        }
        for i in range(8)
    ]
    client, other = deployment.client(owner), deployment.client(stranger)
    upload = client.files.create(
        file=("q.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode()), purpose="batch"
    )
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(upload.id)
    with pytest.raises(openai.BadRequestError, match="input_file_id"):
        other.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    assert batch.id not in [b.id for b in other.batches.list()]
    deadline = time.monotonic() + 120
    while (batch := client.batches.retrieve(batch.id)).status != "completed":
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)

    answered = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    refused = [json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()]
    assert len(answered) + len(refused) == 8 and len(refused) >= 3
    spent = sum(line["response"]["body"]["usage"]["total_tokens"] for line in answered)
    assert spent <= 35
    assert {(line["response"]["status_code"], line["response"]["body"]["error"]["code"]) for line in refused} == {
        (429, "budget_exceeded")
    }
    with pytest.raises(openai.NotFoundError):
        other.files.content(batch.output_file_id)  # type: ignore[arg-type]
    # Each line is one request of the owner's (a refused one under model `-`, as it reached no model).
    deadline = time.monotonic() + 10  # usage is flushed every USAGE_FLUSH_SECONDS
    while (mine := deployment.usage(owner)["totals"])["requests"] < 8:
        assert time.monotonic() < deadline, mine
        time.sleep(0.5)
    assert mine["total_tokens"] == spent and mine["requests"] == 8 and mine["errors"] == len(refused)

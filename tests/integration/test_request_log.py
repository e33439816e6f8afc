"""The request log on a live server with auth on: every request but a successful read is written, off the request
path, with its caller, surface, route, model, status and error code, tokens, latency, a stream's first-token time
and the trace id the caller got back; searched newest first by caller, model, status and time, a page at a time;
each caller sees only its own rows. With REQUEST_LOG=full the bodies are kept, redacted; with `off` nothing is."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sop_llm.infra.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

CHAT = "/v1/chat/completions"


class Deployment:
    def __init__(self, **overrides: Any) -> None:
        self.upstream = FakeOpenAI().start()
        folder = Path(tempfile.mkdtemp(prefix="sop-llm-logs-"))
        (folder / "providers.yaml").write_text(
            f'providers:\n  fake: {{type: openai, base_url: "{self.upstream.url}", timeout: 5}}\n'
        )
        (folder / "models.yaml").write_text("models:\n  remote: {provider: fake, model: ok}\n")
        (folder / "embeddings.yaml").write_text("embeddings: {}\n")
        self.database = f"sqlite+aiosqlite:///{folder}/logs.db"
        settings = {
            "CONFIG_DIR": str(folder),
            "DATABASE_URL": self.database,
            "AUTH_ENABLED": True,
            "API_KEY_CACHE_SECONDS": 0,
            "REQUEST_LOG_FLUSH_SECONDS": 0.1,
            **overrides,
        }
        self.live = LiveServer(make_settings(**settings)).start()
        self.url = self.live.url
        self.admin = self._key("logs admin", "admin")[1]

    def _key(self, name: str, scope: str) -> tuple[str, str]:
        created = subprocess.run(
            [sys.executable, "-m", "sop_llm", "keys", "create", "--name", name, "--scope", scope],
            env={**os.environ, "DATABASE_URL": self.database, "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            check=True,
        )
        made = re.search(r"created API key (\S+) ", created.stdout)
        assert made is not None, created.stdout
        return made[1], created.stdout.strip().splitlines()[-1]

    def user(self, name: str) -> tuple[str, dict[str, str]]:
        """(subject, headers) of a new user key."""
        key_id, key = self._key(name, "user")
        return f"key:{key_id}", {"Authorization": f"Bearer {key}"}

    def logs(self, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.url}/api/v1/logs", params=params, headers=self.as_admin if headers is None else headers, timeout=10
        )

    def wait_for(self, count: int, route: str | None = None, **params: Any) -> list[dict[str, Any]]:
        """The rows matching `params` (and `route`) once there are `count` of them (writes are batched, off the
        request path)."""
        deadline = time.monotonic() + 20
        while True:
            rows: list[dict[str, Any]] = self.logs(limit=200, **params).json()["data"]
            rows = [row for row in rows if route in (None, row["route"])]
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    @property
    def as_admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    def close(self) -> None:
        self.live.stop()
        self.upstream.stop()


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    running = Deployment()
    yield running
    running.close()


def _chat(url: str, headers: dict[str, str], model: str = "remote", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, **extra}
    return httpx.post(f"{url}{CHAT}", json=body, headers=headers, timeout=30)


def test_each_request_is_logged_with_its_caller_route_status_tokens_timings_and_trace_id(
    deployment: Deployment,
) -> None:
    subject, headers = deployment.user("logged")
    answered = _chat(deployment.url, headers)
    assert answered.status_code == 200
    missing = _chat(deployment.url, headers, model="no-such-model")
    assert missing.status_code == 404
    with httpx.stream(
        "POST",
        f"{deployment.url}{CHAT}",
        json={"model": "remote", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=headers,
        timeout=30,
    ) as streamed:
        assert b"[DONE]" in b"".join(streamed.iter_bytes())
    assert httpx.get(f"{deployment.url}/v1/models", headers=headers).status_code == 200  # a read: not logged

    rows = deployment.wait_for(3, subject=subject)
    assert len(rows) == 3
    stream, failed, plain = rows  # newest first
    assert plain["surface"] == "openai" and plain["route"] == CHAT and plain["method"] == "POST"
    assert (plain["model"], plain["status"], plain["error_code"]) == ("remote", 200, None)
    usage = answered.json()["usage"]
    assert (plain["prompt_tokens"], plain["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert plain["total_tokens"] == usage["total_tokens"]
    assert plain["latency_ms"] > 0 and plain["first_token_ms"] is None
    assert plain["trace_id"] == answered.headers["x-request-id"]
    assert (failed["status"], failed["error_code"], failed["total_tokens"]) == (404, "model_not_found", 0)
    assert failed["trace_id"] == missing.headers["x-request-id"]
    assert stream["status"] == 200 and stream["completion_tokens"] > 0
    assert 0 < stream["first_token_ms"] <= stream["latency_ms"]
    arrived = datetime.fromisoformat(plain["at"])
    assert abs(datetime.now(UTC) - arrived) < timedelta(minutes=5)

    detail = httpx.get(f"{deployment.url}/api/v1/logs/{plain['id']}", headers=deployment.as_admin).json()
    assert detail["trace_id"] == plain["trace_id"]
    assert detail["request_body"] is None and detail["response_body"] is None  # metadata only by default


def test_a_caller_sees_its_own_rows_and_an_admin_everyones(deployment: Deployment) -> None:
    alice, alice_headers = deployment.user("alice")
    bob, bob_headers = deployment.user("bob")
    assert _chat(deployment.url, alice_headers).status_code == 200
    assert _chat(deployment.url, bob_headers).status_code == 200
    deployment.wait_for(1, subject=alice)
    deployment.wait_for(1, subject=bob)

    own = deployment.logs(alice_headers).json()["data"]
    assert own and {row["subject"] for row in own} == {alice}
    refused = deployment.logs(alice_headers, subject=bob)
    assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]
    bobs_row = deployment.wait_for(1, subject=bob)[0]
    assert httpx.get(f"{deployment.url}/api/v1/logs/{bobs_row['id']}", headers=alice_headers).status_code == 403
    everyone = {row["subject"] for row in deployment.logs(limit=200).json()["data"]}
    assert {alice, bob} <= everyone
    assert deployment.logs({}).status_code == 401


def test_search_filters_by_model_status_and_time_and_pages_with_a_cursor(deployment: Deployment) -> None:
    subject, headers = deployment.user("searched")
    for _ in range(5):
        assert _chat(deployment.url, headers).status_code == 200
    assert _chat(deployment.url, headers, model="nowhere").status_code == 404
    rows = deployment.wait_for(6, subject=subject)
    assert len(rows) == 6

    assert len(deployment.wait_for(5, subject=subject, model="remote")) == 5
    for status in ("error", "4xx", "404"):
        errors = deployment.logs(subject=subject, status=status).json()["data"]
        assert [row["status"] for row in errors] == [404], status
    assert deployment.logs(subject=subject, status="5xx").json()["data"] == []
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert deployment.logs(subject=subject, **{"from": later.isoformat()}).json()["data"] == []
    assert len(deployment.logs(subject=subject, to=later.isoformat()).json()["data"]) == 6

    seen: list[int] = []
    cursor = None
    while True:
        page = deployment.logs(subject=subject, limit=4, **({"before": cursor} if cursor else {})).json()
        seen += [row["id"] for row in page["data"]]
        if not page["has_more"]:
            assert page["next"] is None
            break
        cursor = page["next"]
    assert seen == [row["id"] for row in rows]  # every row once, newest first

    for bad in ({"status": "teapot"}, {"before": "yesterday"}, {"limit": 0}):
        answer = deployment.logs(**bad)
        assert answer.status_code in (400, 422), bad
        assert answer.json()["error"]["message"]
    assert httpx.get(f"{deployment.url}/api/v1/logs/999999999", headers=deployment.as_admin).status_code == 404
    too_big = httpx.get(f"{deployment.url}/api/v1/logs/{2**64}", headers=deployment.as_admin)
    assert too_big.status_code == 422, too_big.text  # beyond any row id the databases can hold: not a 500
    assert deployment.logs(before=f"{10**17 - 1}-{10**18 - 1}").status_code == 200
    assert deployment.logs(before=f"{10**17}-1").status_code == 400


def test_full_logs_keep_the_bodies_with_every_redacted_pattern_hidden() -> None:
    deployment = Deployment(REQUEST_LOG="full")
    try:
        subject, headers = deployment.user("full")
        secret = "write to jane.doe@example.com, card 4111 1111 1111 1111, key sop_abcdefghijklmnopqrstuvwxyz0123"
        answered = _chat(deployment.url, headers, messages=[{"role": "user", "content": secret}])
        assert answered.status_code == 200
        row = deployment.wait_for(1, subject=subject)[0]
        detail = httpx.get(f"{deployment.url}/api/v1/logs/{row['id']}", headers=deployment.as_admin).json()
        assert "[REDACTED]" in detail["request_body"] and "write to" in detail["request_body"]
        assert answered.json()["choices"][0]["message"]["content"] in detail["response_body"]
        patterns = Settings(_env_file=None).request_log_redact  # type: ignore[call-arg]
        for pattern in patterns:
            for body in (detail["request_body"], detail["response_body"]):
                assert not re.search(pattern, body), pattern

        # A console sign-in carries a credential and a new key's answer the key: their bodies are never kept.
        signed_in = httpx.post(f"{deployment.url}/console/session", json={"credential": deployment.admin})
        assert signed_in.status_code == 200
        made = httpx.post(f"{deployment.url}/api/v1/admin/keys", json={"name": "k"}, headers=deployment.as_admin)
        assert made.status_code == 201
        for route in ("/console/session", "/api/v1/admin/keys"):
            row = deployment.wait_for(1, route=route)[0]
            detail = httpx.get(f"{deployment.url}/api/v1/logs/{row['id']}", headers=deployment.as_admin).json()
            assert (detail["request_body"], detail["response_body"]) == (None, None), route
    finally:
        deployment.close()


def test_with_the_log_off_nothing_is_written() -> None:
    deployment = Deployment(REQUEST_LOG="off")
    try:
        _, headers = deployment.user("unlogged")
        assert _chat(deployment.url, headers).status_code == 200
        assert deployment.live.app.state.services.request_log.written == 0
        assert deployment.logs().json()["data"] == []
    finally:
        deployment.close()


def test_a_client_gone_while_sending_its_body_is_logged_as_499_not_as_a_server_error(deployment: Deployment) -> None:
    subject, headers = deployment.user("impatient")
    port = int(deployment.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(
            f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {headers['Authorization']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"model": "remote", "mess'
        )
    row = deployment.wait_for(1, subject=subject)[0]
    assert (row["route"], row["status"], row["error_code"]) == (CHAT, 499, None)

"""No request holds a model past its budget: a JSON schema whose smallest answer cannot fit in `max_tokens` is
refused before any generation, the JSON fixer stops at its token and time budget, the fuzzing findings answer
4xx with a message that says what to change, and a long generation does not slow the rest of the service."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

MODEL = "smollm2-135m"
MSG = [{"role": "user", "content": "List numbers."}]
MANY_INTEGERS = {"type": "array", "items": {"type": "integer"}, "minItems": 3000}
FIXER_TOKENS, FIXER_SECONDS = 64, 1.5


@pytest.fixture(scope="module")
def budget_server() -> Iterator[LiveServer]:
    live = LiveServer(
        make_settings(
            JSON_FIXER_MAX_TOKENS=48,
            JSON_FIXER_TOKEN_BUDGET=FIXER_TOKENS,
            JSON_FIXER_TIMEOUT=FIXER_SECONDS,
            JSON_FIXER_MAX_ATTEMPTS=5,
        )
    ).start()
    yield live
    live.stop()


def _tokens_generated(server: LiveServer) -> int:
    return int(server.model_stats(MODEL)["tokens_generated"])


def test_a_schema_whose_smallest_answer_cannot_fit_is_refused_at_once(server: LiveServer) -> None:
    body = {
        "model": MODEL,
        "messages": MSG,
        "max_tokens": 2048,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": MANY_INTEGERS}},
    }
    started = time.perf_counter()
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    elapsed = time.perf_counter() - started
    assert reply.status_code == 400, reply.text
    assert elapsed < 1.0
    message = reply.json()["error"]["message"]
    assert "at least 3001 tokens" in message and "max_tokens is 2048" in message and "minItems" in message
    native = httpx.post(
        f"{server.url}/api/v1/models/generate",
        json={"messages": MSG, "max_tokens": 100, "json_schema": {"type": "string", "minLength": 5000}},
    )
    assert native.status_code == 400
    assert "at least 313 tokens" in native.json()["error"]["message"]


def test_a_schema_that_fits_is_not_refused(server: LiveServer) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3}
    body = {"messages": MSG, "max_tokens": 40, "temperature": 0, "json_schema": schema}
    reply = httpx.post(f"{server.url}/api/v1/models/generate", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["json"]["value"]) == 3


def test_oversized_schemas_are_refused(server: LiveServer) -> None:
    properties = {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(700)}
    reply = httpx.post(
        f"{server.url}/api/v1/json/fix", json={"text": "{}", "schema": {"type": "object", "properties": properties}}
    )
    assert reply.status_code == 400
    assert "bytes; at most 65536" in reply.json()["error"]["message"]


def test_deeply_nested_schemas_are_refused(server: LiveServer) -> None:
    schema: dict = {"type": "string"}
    for _ in range(40):
        schema = {"type": "array", "items": schema}
    reply = httpx.post(f"{server.url}/api/v1/json/fix", json={"text": "[]", "schema": schema})
    assert reply.status_code == 400
    assert "nests" in reply.json()["error"]["message"]


def test_the_fixer_is_not_asked_for_an_answer_longer_than_it_may_write(budget_server: LiveServer) -> None:
    before = _tokens_generated(budget_server)
    started = time.perf_counter()
    reply = httpx.post(
        f"{budget_server.url}/api/v1/json/fix",
        json={"text": '"short"', "schema": {"type": "string", "minLength": 5000}},
        timeout=60,
    )
    assert reply.status_code == 422, reply.text
    assert time.perf_counter() - started < 1.0
    assert "at least 313 tokens" in reply.json()["error"]["message"]
    assert _tokens_generated(budget_server) == before  # no model ran


def test_the_fixer_stops_within_its_token_and_time_budget(budget_server: LiveServer) -> None:
    # The grammar cannot express multipleOf, so the fixer's answers keep failing validation: it would go on for five
    # attempts of 48 tokens each if its budget did not stop it first.
    schema = {"type": "array", "items": {"type": "integer", "multipleOf": 9973}, "minItems": 20}
    before = _tokens_generated(budget_server)
    started = time.perf_counter()
    reply = httpx.post(f"{budget_server.url}/api/v1/json/fix", json={"text": "[1, 2, 3", "schema": schema}, timeout=60)
    elapsed = time.perf_counter() - started
    assert reply.status_code == 422, reply.text
    message = reply.json()["error"]["message"]
    assert "JSON_FIXER_TOKEN_BUDGET" in message or "JSON_FIXER_TIMEOUT" in message, message
    assert _tokens_generated(budget_server) - before <= FIXER_TOKENS
    assert elapsed < FIXER_SECONDS + 2.0  # the time budget, plus the local steps and stopping within one token


@pytest.mark.parametrize("prompt", ["", [""]])
def test_an_empty_completion_prompt_is_a_400(server: LiveServer, prompt: object) -> None:
    reply = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 4})
    assert reply.status_code == 400, reply.text
    assert "prompt: is empty" in reply.json()["error"]["message"]


def test_a_task_page_offset_beyond_its_bound_is_a_4xx(server: LiveServer) -> None:
    reply = httpx.get(f"{server.url}/api/v1/tasks", params={"offset": "99999999999999999999999"})
    assert reply.status_code == 422, reply.text
    assert "offset" in reply.json()["error"]["message"]


async def test_health_and_embeddings_stay_fast_while_a_long_generation_runs(budget_server: LiveServer) -> None:
    long = {"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 1500, "temperature": 0, "stream": True}
    timings: dict[str, list[float]] = {"health": [], "embeddings": []}
    async with httpx.AsyncClient(timeout=60) as client:
        # A process's first request of a kind pays one-off costs (connection, first route call): not measured here.
        await client.post(f"{budget_server.url}/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "first"})
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("POST", f"{budget_server.url}/v1/completions", json=long) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        while not (await anext(lines)).startswith("data: "):
            pass
        for attempt in range(5):
            started = time.perf_counter()
            health = await client.get(f"{budget_server.url}/api/v1/health")
            timings["health"].append(time.perf_counter() - started)
            started = time.perf_counter()
            sentence = f"A fresh sentence number {attempt} about {time.time()} to embed."
            embedded = await client.post(
                f"{budget_server.url}/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": sentence}
            )
            timings["embeddings"].append(time.perf_counter() - started)
            assert health.status_code == 200 and embedded.status_code == 200
            await asyncio.sleep(0.05)
        assert budget_server.model_stats(MODEL)["active"] == 1  # the generation was running all along
    assert max(timings["health"]) < 0.1, timings
    assert max(timings["embeddings"]) < 0.1, timings


def _counting_server() -> tuple[ThreadingHTTPServer, list[str]]:
    """A loopback HTTP server that serves a schema and records every request it gets."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'{"type": "integer"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, hits


def test_a_schema_reference_is_never_fetched(server: LiveServer) -> None:
    httpd, hits = _counting_server()
    try:
        remote = {"type": "object", "properties": {"a": {"$ref": f"http://127.0.0.1:{httpd.server_address[1]}/s.json"}}}
        calls = [
            ("/api/v1/json/fix", {"text": '{"a": 1}', "schema": remote}),
            ("/api/v1/models/generate", {"prompt": "hi", "max_tokens": 4, "json_schema": remote}),
            (
                "/v1/chat/completions",
                {
                    "model": MODEL,
                    "messages": MSG,
                    "max_tokens": 4,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": remote}},
                },
            ),
        ]
        for path, body in calls:
            reply = httpx.post(f"{server.url}{path}", json=body, timeout=30)
            assert reply.status_code == 400, (path, reply.text)
            assert "only references inside the schema" in reply.json()["error"]["message"]
        assert hits == []  # nothing was fetched
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_schema_reference_that_leads_nowhere_is_a_400(server: LiveServer) -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    reply = httpx.post(f"{server.url}/api/v1/json/fix", json={"text": '{"a": 1}', "schema": schema})
    assert reply.status_code == 400, reply.text
    assert "leads nowhere" in reply.json()["error"]["message"]

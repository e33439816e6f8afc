"""Fallback chains, retries, circuit breakers, health checks and upstream cancellation, through
the live service against a scripted OpenAI-compatible upstream (tests/fakes/openai_server.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.openai_server import ANSWER, FakeOpenAI
from tests.live_server import LiveServer, free_port, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

FAILURE_THRESHOLD = 3
COOLDOWN = 1.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def service(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = Path(tmp_path_factory.mktemp("fallback-config"))
    (folder / "providers.yaml").write_text(
        f"""
providers:
  fake: {{type: openai, base_url: "{upstream.url}", timeout: 5}}
  fake-impatient: {{type: openai, base_url: "{upstream.url}", timeout: 0.5}}
  nowhere: {{type: openai, base_url: "http://127.0.0.1:{free_port()}/v1"}}
  claude-without-key: {{type: anthropic, api_key: "${{SOP_TEST_UNSET_KEY:-}}"}}
"""
    )
    (folder / "models.yaml").write_text(
        """
models:
  good: {provider: fake, model: ok}
  broken: {provider: fake, model: fail-500, fallbacks: [good]}
  overloaded: {provider: fake, model: fail-503, fallbacks: [good]}
  limited: {provider: fake, model: fail-429, fallbacks: [good]}
  limited-long: {provider: fake, model: fail-429-long, fallbacks: [good]}
  slow: {provider: fake-impatient, model: slow, fallbacks: [good]}
  refused: {provider: nowhere, model: x, fallbacks: [good]}
  rejects: {provider: fake, model: fail-400, fallbacks: [good]}
  midstream: {provider: fake, model: midstream, fallbacks: [good]}
  streamer: {provider: fake, model: slow-stream}
  hangs: {provider: fake, model: hang}
  breaker: {provider: fake, model: breaker}
  idle: {provider: fake, model: idle}
  keyless: {provider: claude-without-key, model: claude-x, fallbacks: [good]}
  fixer-down: {provider: fake, model: fail-503}
"""
    )
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    live = LiveServer(
        make_settings(
            CONFIG_DIR=str(folder),
            LLM_DEFAULT_MODEL="good",
            LLM_RETRIES=1,
            LLM_RETRY_BACKOFF=0.01,
            CIRCUIT_FAILURE_THRESHOLD=FAILURE_THRESHOLD,
            CIRCUIT_COOLDOWN_SECONDS=COOLDOWN,
            HEALTH_CHECK_INTERVAL=0.2,
            JSON_FIXER_MODEL="fixer-down",
        )
    ).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(service: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key="x", max_retries=0)


def _stats(service: LiveServer, name: str) -> dict:
    providers = httpx.get(f"{service.url}/api/v1/providers").json()["providers"]
    return next(p for p in providers if p["name"] == name)


def _ask(client: openai.OpenAI, model: str) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5)


@pytest.mark.parametrize(
    ("model", "upstream_model", "upstream_calls"),
    [
        ("broken", "fail-500", 2),  # retried once, then the next deployment
        ("overloaded", "fail-503", 2),
        ("limited", "fail-429", 2),  # retried after its short Retry-After
        ("limited-long", "fail-429-long", 1),  # Retry-After beyond LLM_RETRY_MAX_WAIT: straight to the next one
        ("slow", "slow", 2),  # timed out twice
        ("refused", None, None),  # connection refused
    ],
)
def test_failing_primary_is_answered_by_the_fallback(
    client: openai.OpenAI,
    service: LiveServer,
    upstream: FakeOpenAI,
    model: str,
    upstream_model: str | None,
    upstream_calls: int | None,
) -> None:
    before_calls = upstream.count(upstream_model) if upstream_model else 0
    before = _stats(service, model)["stats"]
    reply = _ask(client, model)
    assert reply.model == "good"
    assert reply.choices[0].message.content == ANSWER
    after = _stats(service, model)["stats"]
    assert after["fallbacks"] == before["fallbacks"] + 1  # counted
    if upstream_model is not None:
        assert upstream.count(upstream_model) - before_calls == upstream_calls


def test_non_retryable_400_is_neither_retried_nor_fallen_back(
    client: openai.OpenAI, service: LiveServer, upstream: FakeOpenAI
) -> None:
    good_before = upstream.count("ok")
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, "rejects")
    assert caught.value.code == "provider_bad_request"
    assert upstream.count("fail-400") == 1
    assert upstream.count("ok") == good_before
    assert _stats(service, "rejects")["stats"]["fallbacks"] == 0


def test_request_given_fallbacks(service: LiveServer) -> None:
    body = {"model": "refused", "messages": [{"role": "user", "content": "hi"}], "fallbacks": ["good"]}
    assert httpx.post(f"{service.url}/v1/chat/completions", json=body).json()["model"] == "good"
    native = {"model": "refused", "messages": [{"role": "user", "content": "hi"}], "fallbacks": ["good"]}
    assert httpx.post(f"{service.url}/api/v1/models/generate", json=native).json()["model"] == "good"
    # Fallbacks name configured models, never URLs: a request cannot point a provider anywhere.
    unknown = httpx.post(f"{service.url}/v1/chat/completions", json={**body, "fallbacks": ["http://evil/v1"]})
    assert unknown.status_code == 404


def test_stream_falls_back_before_the_first_chunk(service: LiveServer) -> None:
    body = {"model": "broken", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{service.url}/v1/chat/completions", json=body) as response:
        raw = response.read()
    events = raw.decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {"good"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "part1 part2 "


def test_mid_stream_failure_ends_the_stream_without_splicing(service: LiveServer, upstream: FakeOpenAI) -> None:
    good_before = upstream.count("ok")
    body = {"model": "midstream", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{service.url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        raw = response.read()
    events = raw.decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert "error" in payloads[-1]
    assert "upstream fell over" in payloads[-1]["error"]["message"]
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads[:-1])
    assert text == "part1 "  # what was sent before the failure, and nothing from another model
    assert upstream.count("ok") == good_before  # no fallback after the first byte
    stream = openai.OpenAI(base_url=f"{service.url}/v1", api_key="x", max_retries=0).chat.completions.create(
        model="midstream", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match="upstream fell over"):
        list(stream)  # the official SDK raises on the in-stream error event


def test_circuit_opens_after_n_failures_and_half_opens_after_cooldown(
    client: openai.OpenAI, service: LiveServer, upstream: FakeOpenAI
) -> None:
    upstream.set_mode("breaker", "fail-500")
    # LLM_RETRIES=1: each request makes up to two upstream calls; the circuit opens on the third failure.
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            _ask(client, "breaker")
    assert upstream.count("breaker") == FAILURE_THRESHOLD
    assert _stats(service, "breaker")["circuit"]["state"] == "open"
    with pytest.raises(openai.InternalServerError) as caught:
        _ask(client, "breaker")
    assert caught.value.code == "circuit_open"
    assert upstream.count("breaker") == FAILURE_THRESHOLD  # an open circuit sends nothing upstream
    upstream.set_mode("breaker", "ok")
    time.sleep(COOLDOWN + 0.1)
    assert _ask(client, "breaker").choices[0].message.content == ANSWER  # the half-open probe succeeds
    assert upstream.count("breaker") == FAILURE_THRESHOLD + 1
    circuit = _stats(service, "breaker")["circuit"]
    assert circuit["state"] == "closed"
    assert circuit["times_opened"] == 1


def test_half_open_probe_failure_reopens(client: openai.OpenAI, service: LiveServer, upstream: FakeOpenAI) -> None:
    upstream.set_mode("breaker", "fail-500")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            _ask(client, "breaker")
    time.sleep(COOLDOWN + 0.1)
    calls = upstream.count("breaker")
    with pytest.raises(openai.InternalServerError):
        _ask(client, "breaker")  # the probe fails: open again, no second call
    assert upstream.count("breaker") == calls + 1
    assert _stats(service, "breaker")["circuit"]["state"] == "open"


def test_health_checks_never_call_a_generation_endpoint(service: LiveServer, upstream: FakeOpenAI) -> None:
    deadline = time.monotonic() + 10
    while upstream.calls[("/v1/models", "")] < 3 * 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    idle = _stats(service, "idle")
    assert idle["health"]["ok"] is True
    assert idle["health"]["detail"] == "model list answered"
    assert upstream.count("idle") == 0  # checked many times, never asked to generate
    refused = _stats(service, "refused")["health"]
    assert refused["ok"] is False
    assert "unreachable" in refused["detail"]
    health = httpx.get(f"{service.url}/api/v1/health").json()
    assert health["components"]["providers"]["idle"] == {"healthy": True, "circuit": "closed"}


def test_client_disconnect_cancels_the_upstream_stream(service: LiveServer, upstream: FakeOpenAI) -> None:
    body = {"model": "streamer", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{service.url}/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(6), strict=False) if line.startswith("data:")]
    assert received
    deadline = time.monotonic() + 5
    while upstream.aborted["slow-stream"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.aborted["slow-stream"] == 1


def test_client_disconnect_cancels_the_upstream_request(service: LiveServer, upstream: FakeOpenAI) -> None:
    upstream.set_mode("hang", "slow")
    body = {"model": "hangs", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(5, read=0.5))
    deadline = time.monotonic() + 5
    while upstream.aborted["hang"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.aborted["hang"] == 1
    assert upstream.count("hang") == 1


def test_a_deployment_without_its_key_does_not_stop_the_service(client: openai.OpenAI, service: LiveServer) -> None:
    assert _ask(client, "keyless").model == "good"  # it fails over like any unavailable deployment
    deadline = time.monotonic() + 10
    while (health := _stats(service, "keyless")["health"])["ok"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert health["ok"] is False
    assert "ANTHROPIC_API_KEY" in health["detail"]


def test_transport_errors_are_never_fed_into_a_json_re_ask(service: LiveServer, upstream: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    before = upstream.count("fail-503")
    response = httpx.post(f"{service.url}/api/v1/json/fix", json={"text": '{"b": 1}', "schema": schema})
    # The fixer's upstream is down: the answer is that transport error after ModelRouter's one retry loop
    # (LLM_RETRIES=1: exactly two calls), not a 422 after a second fixer attempt re-asking about the error.
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_not_available"
    assert upstream.count("fail-503") - before == 2

"""The `anthropic` provider through the live service against a fake Anthropic API (tests/fakes/anthropic_server.py)
that speaks the real wire format; clients use the official openai SDK on /v1, or raw httpx where framing matters.
A few cases (key checks, health detail, timeouts) call the provider directly."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from loguru import logger
from pydantic import BaseModel

from sop_llm.infra.errors import (
    ProviderAuthError,
    ProviderInitializationError,
    ProviderNotAvailableError,
    ProviderRateLimitError,
    ProviderTimeoutError,
)
from sop_llm.infra.model_config import ModelConfig, ProviderConfig
from sop_llm.providers.remote.anthropic import AnthropicProvider
from sop_llm.providers.types import ChatMessage, GenerationRequest
from tests.fakes.anthropic_server import DEFAULT_TEXT, Failure, FakeAnthropic, Reply, text, tool_use
from tests.live_server import LiveServer, free_port, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

API_KEY = "test-key"
UPSTREAM_MODEL = "claude-test"
HI = [{"role": "user", "content": "Hi"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=API_KEY, model_ids=(UPSTREAM_MODEL,)).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeAnthropic) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def config_dir(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(tmp_path_factory.mktemp("anthropic-config"))
    (folder / "providers.yaml").write_text(
        f"providers:\n  claude-api: {{type: anthropic, base_url: '{fake.url}', api_key: {API_KEY}, timeout: 10}}\n"
    )
    (folder / "models.yaml").write_text(f"models:\n  claude: {{provider: claude-api, model: {UPSTREAM_MODEL}}}\n")
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    return folder


def _service(config_dir: Path, **settings: Any) -> LiveServer:
    values = {"CONFIG_DIR": str(config_dir), "LLM_DEFAULT_MODEL": "claude", "CIRCUIT_FAILURE_THRESHOLD": 1000}
    return LiveServer(make_settings(**{**values, **settings})).start()


@pytest.fixture(scope="module")
def service(config_dir: Path) -> Iterator[LiveServer]:
    live = _service(config_dir, LLM_RETRIES=0, HEALTH_CHECK_INTERVAL=0.3)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(service: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key="x", max_retries=0)


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Every log line of the test, the SDK's debug log included."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG", format="{message}")
    sdk = logging.getLogger("anthropic")
    level = sdk.level
    sdk.setLevel(logging.DEBUG)
    yield lines
    sdk.setLevel(level)
    logger.remove(sink)


def _provider(url: str, api_key: str | None = API_KEY, timeout: float = 10) -> AnthropicProvider:
    config = ProviderConfig(type="anthropic", base_url=url, api_key=api_key, timeout=timeout)  # type: ignore[arg-type]
    return AnthropicProvider("claude", ModelConfig(provider="claude-api", model=UPSTREAM_MODEL), config)


@pytest.fixture(scope="module")
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    loaded = _provider(fake.url)
    await loaded.load()
    yield loaded
    await loaded.aclose()


def _sse_events(raw: bytes) -> list[Any]:
    events = raw.removesuffix(b"\n\n").split(b"\n\n")
    assert all(e.startswith(b"data: ") for e in events)
    return [e.removeprefix(b"data: ").decode() if e == b"data: [DONE]" else json.loads(e[6:]) for e in events]


def test_importing_the_module_does_not_import_the_sdk() -> None:
    code = "import sop_llm.providers.remote.anthropic, sys; print('anthropic' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


# -- chat -------------------------------------------------------------------------------------------------
def test_chat_puts_system_messages_into_system(client: openai.OpenAI, fake: FakeAnthropic) -> None:
    fake.plan(text("Bonjour !", input_tokens=21, output_tokens=4))
    reply = client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
        ],
        max_tokens=50,
        temperature=0.2,
        stop=["END"],
    )
    assert reply.model == "claude"
    assert reply.choices[0].message.content == "Bonjour !"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (21, 4, 25)
    [sent] = fake.messages()  # SDK retries are off: one upstream call
    assert sent["system"] == "Be brief.\n\nAnswer in French."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert (sent["model"], sent["max_tokens"], sent["stop_sequences"]) == (UPSTREAM_MODEL, 50, ["END"])
    assert sent["temperature"] == 0.2
    assert "top_p" not in sent  # recent models refuse temperature and top_p together
    [request] = fake.recorded("/v1/messages")
    assert request.headers["anthropic-version"]


def test_consecutive_turns_of_one_role_are_merged(client: openai.OpenAI, fake: FakeAnthropic) -> None:
    reply = client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "user", "content": "First."},
            {"role": "user", "content": "Second."},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "Third."},
        ],
        temperature=1.7,  # OpenAI's range goes to 2, Anthropic's to 1
    )
    assert reply.choices[0].message.content == DEFAULT_TEXT
    [sent] = fake.messages()
    assert [(m["role"], [b["text"] for b in m["content"]]) for m in sent["messages"]] == [
        ("user", ["First.", "Second."]),
        ("assistant", ["Noted."]),
        ("user", ["Third."]),
    ]
    assert sent["temperature"] == 1.0


def test_streaming_text_with_usage(client: openai.OpenAI, fake: FakeAnthropic) -> None:
    answer = "Streams arrive one word at a time."
    fake.plan(text(answer, input_tokens=9, output_tokens=8))
    chunks = list(
        client.chat.completions.create(model="claude", messages=HI, stream=True, stream_options={"include_usage": True})
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3
    assert "".join(pieces) == answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 8)
    assert fake.messages()[0]["stream"] is True


# -- tools ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
    ],
)
def test_tool_call_answer(
    client: openai.OpenAI, fake: FakeAnthropic, tool_choice: Any, expected: dict[str, Any]
) -> None:
    fake.plan(tool_use("get_weather", {"city": "Paris"}, call_id="toolu_paris"))
    reply = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice=tool_choice,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert (call.id, call.type, call.function.name) == ("toolu_paris", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    [sent] = fake.messages()
    function = WEATHER_TOOL["function"]
    assert sent["tools"] == [
        {"name": "get_weather", "description": function["description"], "input_schema": function["parameters"]}  # type: ignore[index]
    ]
    assert sent["tool_choice"] == expected


def test_tool_choice_none_keeps_the_tools_but_forbids_calls(client: openai.OpenAI, fake: FakeAnthropic) -> None:
    client.chat.completions.create(model="claude", messages=HI, tools=[WEATHER_TOOL], tool_choice="none")
    [sent] = fake.messages()
    assert sent["tool_choice"] == {"type": "none"}
    assert [t["name"] for t in sent["tools"]] == ["get_weather"]


def test_tool_results_follow_up(client: openai.OpenAI, fake: FakeAnthropic) -> None:
    fake.plan(text("Sunny in Paris, rainy in Oslo."))
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    reply = client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{**call, "id": "toolu_1"}, {**call, "id": "toolu_2"}],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "rainy"},
            {"role": "user", "content": "Summarise."},
        ],
        tools=[WEATHER_TOOL],
    )
    assert reply.choices[0].message.content == "Sunny in Paris, rainy in Oslo."
    [sent] = fake.messages()
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rainy"},
                {"type": "text", "text": "Summarise."},
            ],
        },
    ]


def test_streaming_tool_calls_reach_the_client(client: openai.OpenAI, fake: FakeAnthropic) -> None:
    fake.plan(
        tool_use("get_weather", {"city": "Reykjavík", "unit": "celsius"}, call_id="toolu_r", preamble="Checking.")
    )
    chunks = list(client.chat.completions.create(model="claude", messages=HI, tools=[WEATHER_TOOL], stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    calls = [call for d in deltas for call in d.tool_calls or []]
    assert "".join(d.content or "" for d in deltas) == "Checking."
    assert calls[0].id == "toolu_r"
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert all(c.index == 0 for c in calls)
    assert [c.id for c in calls[1:]] == [None] * (len(calls) - 1)
    assert len(calls) > 3  # the arguments arrive in fragments
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    assert json.loads(arguments) == {"city": "Reykjavík", "unit": "celsius"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_provider_streams_tool_calls_with_their_own_indexes(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    reply = tool_use("get_weather", {"city": "Lima"}, call_id="toolu_a")
    reply.content.append({"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}})
    fake.plan(reply)
    request = GenerationRequest(messages=[ChatMessage("user", "Weather and time?")], tools=[WEATHER_TOOL])
    chunks = [c async for c in provider.stream(request)]
    openings = [call for c in chunks for call in c.tool_calls or [] if "id" in call]
    assert [(o["index"], o["id"], o["function"]["name"]) for o in openings] == [
        (0, "toolu_a", "get_weather"),
        (1, "toolu_b", "get_time"),
    ]
    arguments = {0: "", 1: ""}
    for call in (call for c in chunks for call in c.tool_calls or []):
        arguments[call["index"]] += call["function"]["arguments"]
    assert {i: json.loads(a) for i, a in arguments.items()} == {0: {"city": "Lima"}, 1: {}}
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 7)


# -- JSON through a forced tool ---------------------------------------------------------------------------
class Person(BaseModel):
    name: str
    age: int


def test_json_schema_through_the_forced_tool(client: openai.OpenAI, fake: FakeAnthropic) -> None:
    fake.plan(tool_use("json_response", {"name": "Ada", "age": 36}))
    parsed = client.chat.completions.parse(model="claude", messages=HI, response_format=Person)
    choice = parsed.choices[0]
    assert choice.message.parsed == Person(name="Ada", age=36)
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls in (None, [])
    [sent] = fake.messages()
    assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert sent["tools"][-1]["input_schema"] == Person.model_json_schema() | {"additionalProperties": False}


def test_streamed_json_object(client: openai.OpenAI, fake: FakeAnthropic) -> None:
    fake.plan(tool_use("json_response", {"colours": ["red", "green", "blue"]}))
    chunks = list(
        client.chat.completions.create(
            model="claude", messages=HI, response_format={"type": "json_object"}, stream=True
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) > 2
    assert json.loads("".join(pieces)) == {"colours": ["red", "green", "blue"]}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert fake.messages()[0]["tools"] == [
        {"name": "json_response", "description": "Answer with this tool's input.", "input_schema": {"type": "object"}}
    ]


# -- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (Failure(401, "authentication_error", "invalid x-api-key"), 502, "provider_auth_failed"),
        (Failure(529, "overloaded_error", "Overloaded"), 503, "provider_not_available"),
        (Failure(500, "api_error", "Internal server error"), 503, "provider_not_available"),
        (Failure(400, "invalid_request_error", "prompt is too long"), 400, "provider_bad_request"),
    ],
)
def test_upstream_errors(
    service: LiveServer,
    fake: FakeAnthropic,
    logged: list[str],
    failure: Failure,
    status: int,
    code: str,
) -> None:
    fake.plan(failure)
    response = httpx.post(f"{service.url}/v1/chat/completions", json={"model": "claude", "messages": HI})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert API_KEY not in response.text
    assert any(response.json()["error"]["message"] in line for line in logged) == (status >= 500)
    assert any("HTTP Request: POST" in line for line in logged)  # the SDK's debug log is on...
    assert not [line for line in logged if API_KEY in line]  # ...and nothing logs the key
    assert len(fake.messages()) == 1  # SDK retries are off and LLM_RETRIES is 0


def test_rate_limit_passes_retry_after(service: LiveServer, fake: FakeAnthropic) -> None:
    fake.plan(Failure(429, "rate_limit_error", "Number of requests has exceeded your rate limit", {"retry-after": "7"}))
    response = httpx.post(f"{service.url}/v1/chat/completions", json={"model": "claude", "messages": HI})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "provider_rate_limited"


def test_rate_limit_is_retried_when_retries_are_on(config_dir: Path, fake: FakeAnthropic) -> None:
    live = _service(config_dir, LLM_RETRIES=1)
    try:
        fake.reset()
        fake.plan(Failure(429, "rate_limit_error", "slow down", {"retry-after": "0.2"}), text("Made it."))
        started = time.monotonic()
        response = httpx.post(f"{live.url}/v1/chat/completions", json={"model": "claude", "messages": HI})
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "Made it."
        assert time.monotonic() - started >= 0.2  # the upstream's Retry-After was honoured
        assert len(fake.messages()) == 2
    finally:
        live.stop()


async def test_rate_limit_error_carries_retry_after(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fake.plan(Failure(429, "rate_limit_error", "slow down", {"retry-after": "7"}))
    with pytest.raises(ProviderRateLimitError) as caught:
        await provider.generate(GenerationRequest(messages=[ChatMessage("user", "Hi")]))
    assert caught.value.retry_after == 7.0
    assert "slow down" in caught.value.message


def test_error_event_after_text_ends_the_stream(service: LiveServer, fake: FakeAnthropic) -> None:
    fake.plan(text("Half of an answer", stream_error="overloaded_error"))
    body = {"model": "claude", "messages": HI, "stream": True}
    with httpx.stream("POST", f"{service.url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = _sse_events(response.read())
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["code"] == "provider_not_available"
    assert "overloaded_error" in error["message"]
    chunks = events[:-2]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Half of an answer"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


async def test_a_stream_cut_short_is_an_error(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fake.plan(text("Cut off in the", cut_stream=True))
    received: list[str] = []

    async def read() -> None:
        async for chunk in provider.stream(GenerationRequest(messages=[ChatMessage("user", "Hi")])):
            received.append(chunk.text)

    with pytest.raises(ProviderNotAvailableError, match="before message_stop"):
        await read()
    assert "".join(received) == "Cut off in the"


def test_malformed_tool_call_arguments_are_the_callers_fault(service: LiveServer, fake: FakeAnthropic) -> None:
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}
    messages = [*HI, {"role": "assistant", "content": None, "tool_calls": [call]}]
    body = {"model": "claude", "messages": messages, "tools": [WEATHER_TOOL]}
    response = httpx.post(f"{service.url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "arguments are not JSON" in response.json()["error"]["message"]
    assert fake.messages() == []


async def test_wrong_key_is_an_auth_error_that_hides_the_key(fake: FakeAnthropic) -> None:
    wrong = _provider(fake.url, api_key="sk-ant-wrong-secret")
    await wrong.load()
    try:
        with pytest.raises(ProviderAuthError) as caught:
            await wrong.generate(GenerationRequest(messages=[ChatMessage("user", "Hi")]))
        assert "sk-ant-wrong-secret" not in str(caught.value)
        assert "ANTHROPIC_API_KEY" in caught.value.message
        assert not (await wrong.health()).ok
    finally:
        await wrong.aclose()


@pytest.mark.parametrize("api_key", ["", "   ", None])
async def test_missing_api_key_fails_at_load(api_key: str | None) -> None:
    keyless = _provider("http://127.0.0.1:1", api_key=api_key)
    with pytest.raises(ProviderInitializationError, match=r"ANTHROPIC_API_KEY.*\$\{ANTHROPIC_API_KEY\}"):
        await keyless.load()
    with pytest.raises(ProviderInitializationError, match="has no API key"):
        await keyless.generate(GenerationRequest(messages=[ChatMessage("user", "Hi")]))
    health = await keyless.health()
    assert not health.ok
    assert "ANTHROPIC_API_KEY" in health.detail


async def test_unreachable_upstream() -> None:
    nowhere = _provider(f"http://127.0.0.1:{free_port()}")
    await nowhere.load()
    try:
        with pytest.raises(ProviderNotAvailableError):
            await nowhere.generate(GenerationRequest(messages=[ChatMessage("user", "Hi")]))
        with pytest.raises(ProviderNotAvailableError):
            [c async for c in nowhere.stream(GenerationRequest(messages=[ChatMessage("user", "Hi")]))]
        health = await nowhere.health()
        assert (health.ok, health.detail) == (False, "unreachable: APIConnectionError")
    finally:
        await nowhere.aclose()


async def test_slow_upstream_times_out(fake: FakeAnthropic) -> None:
    impatient = _provider(fake.url, timeout=0.3)
    await impatient.load()
    try:
        fake.plan(Reply([{"type": "text", "text": "late"}], delay=2))
        with pytest.raises(ProviderTimeoutError):
            await impatient.generate(GenerationRequest(messages=[ChatMessage("user", "Hi")]))
    finally:
        await impatient.aclose()


# -- health -----------------------------------------------------------------------------------------------
def test_health_uses_only_the_model_list(service: LiveServer, fake: FakeAnthropic) -> None:
    deadline = time.monotonic() + 10
    while len(fake.recorded()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    [entry] = httpx.get(f"{service.url}/api/v1/providers").json()["providers"]
    assert (entry["type"], entry["health"]["ok"], entry["health"]["detail"]) == (
        "anthropic",
        True,
        "model list answered",
    )
    recorded = fake.recorded()
    assert len(recorded) >= 2
    assert {(r.method, r.path, r.query.get("limit")) for r in recorded} == {("GET", "/v1/models", "1")}


async def test_health_reports_an_upstream_failure(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
    fake.models_failure = Failure(503, "api_error", "unavailable")
    health = await provider.health()
    assert (health.ok, health.detail) == (False, "GET /v1/models answered 503")
    fake.models_failure = None
    assert (await provider.health()).ok

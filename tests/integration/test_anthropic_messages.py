"""Anthropic's Messages API (/v1/messages, /v1/messages/count_tokens) through the official `anthropic` SDK, on the
local model (SmolLM2-135M: the tests check structure and protocol, not wisdom) and on a Claude deployment served by
the fake Anthropic API (tests/fakes/anthropic_server.py). Raw httpx where the wire format itself is checked; also
auth with `x-api-key`, and the rate limiter's and body cap's refusals in Anthropic's error shape."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from pydantic import BaseModel

from tests.fakes.anthropic_server import Failure, FakeAnthropic, text, tool_use
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

LOCAL = "smollm2"
API_KEY = "test-key"
UPSTREAM_MODEL = "claude-test"
HI = [{"role": "user", "content": "Hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
FORCE_WEATHER = {"type": "tool", "name": "get_weather"}
# Greedy answers repeat. This SDK version has no sampling parameters of its own: they go as extra body fields.
GREEDY = {"temperature": 0}
EVENT_TYPES = {
    "message_start",
    "content_block_start",
    "ping",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
}


def _client(url: str, api_key: str = "unused", **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=api_key, max_retries=0, **options)


def _events(url: str, body: dict[str, Any], **headers: str) -> list[tuple[str, dict[str, Any]]]:
    """The raw SSE events of a streamed message: (event name, data), each checked to be framed as Anthropic's.
    `body` is what the SDK would be given: its `extra_body` fields go to the top level."""
    sent = {**{k: v for k, v in body.items() if k != "extra_body"}, **body.get("extra_body", {}), "stream": True}
    # A guard against a hang, not a speed limit (the SDK's own is 600 s): a forced tool call sends its first event
    # once the arguments are complete, which took over 60 s with both cores busy elsewhere.
    with httpx.stream("POST", f"{url}/v1/messages", json=sent, headers=headers, timeout=300) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.endswith("\n\n")
    events = []
    for frame in raw.removesuffix("\n\n").split("\n\n"):
        head, data = frame.split("\n")
        name = head.removeprefix("event: ")
        payload = json.loads(data.removeprefix("data: "))
        assert head.startswith("event: ") and data.startswith("data: ")
        assert payload["type"] == name
        events.append((name, payload))
    return events


def _check_order(names: list[str]) -> None:
    """message_start, then blocks (start, deltas, stop; ping after the first start), message_delta, message_stop."""
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("ping") == 1
    body = [n for n in names[1:-2] if n != "ping"]
    if body:
        assert names[1:3] == ["content_block_start", "ping"]
    opened = False
    for name in body:
        assert name in EVENT_TYPES
        if name == "content_block_start":
            assert not opened
            opened = True
        elif name == "content_block_delta":
            assert opened
        elif name == "content_block_stop":
            assert opened
            opened = False
    assert not opened


def _anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert body["request_id"] == response.headers["request-id"] == response.headers["x-request-id"]
    message: str = body["error"]["message"]
    return message


# -- the local model ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(base_url: str) -> anthropic.Anthropic:
    return _client(base_url)


def test_create_on_the_local_model(local: anthropic.Anthropic) -> None:
    message = local.messages.create(
        model=LOCAL,
        max_tokens=12,
        system="You are terse.",
        messages=[
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
            {"role": "user", "content": [{"type": "text", "text": "Another one."}]},
        ],
        extra_body=GREEDY,
        metadata={"user_id": "someone"},
    )
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", "smollm2-135m")
    [block] = message.content
    assert block.type == "text"
    assert block.text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.stop_sequence is None
    assert 20 < message.usage.input_tokens < 200
    assert 1 <= message.usage.output_tokens <= 12
    assert message._request_id


def test_max_tokens_is_the_stop_reason_when_it_cuts(local: anthropic.Anthropic) -> None:
    message = local.messages.create(
        model=LOCAL,
        max_tokens=3,
        messages=[{"role": "user", "content": "Tell me a long story."}],
        extra_body=GREEDY,
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_count_tokens_is_exact_on_the_local_model(local: anthropic.Anthropic, server: LiveServer) -> None:
    conversation: dict[str, Any] = {
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
    }
    generations = server.model_stats("smollm2-135m")["completed"]
    counted = local.messages.count_tokens(model=LOCAL, **conversation).input_tokens
    assert server.model_stats("smollm2-135m")["completed"] == generations  # tokenized, not generated
    answered = local.messages.create(model=LOCAL, max_tokens=2, **conversation).usage.input_tokens
    assert counted == answered
    with_tools = local.messages.count_tokens(model=LOCAL, tools=[WEATHER], **conversation).input_tokens  # type: ignore[list-item]
    forced = local.messages.create(
        model=LOCAL,
        max_tokens=40,
        tools=[WEATHER],
        tool_choice=FORCE_WEATHER,
        **conversation,  # type: ignore[list-item, arg-type]
    )
    assert with_tools > counted  # the tools are described to the model
    assert (
        local.messages.count_tokens(
            model=LOCAL,
            tools=[WEATHER],
            tool_choice=FORCE_WEATHER,
            **conversation,  # type: ignore[list-item, arg-type]
        ).input_tokens
        == forced.usage.input_tokens
    )


def test_stream_on_the_local_model(local: anthropic.Anthropic, base_url: str) -> None:
    request: dict[str, Any] = {
        "model": LOCAL,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Count to five."}],
        "extra_body": GREEDY,
    }
    with local.messages.stream(**request) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    [block] = final.content
    assert block.type == "text"
    assert block.text == "".join(pieces)
    assert final.id.startswith("msg_")
    assert final.stop_reason in ("end_turn", "max_tokens")
    whole = local.messages.create(**request)  # the same request, not streamed: the same answer and counts
    assert whole.content[0].text == block.text  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        whole.usage.input_tokens,
        whole.usage.output_tokens,
    )

    events = _events(base_url, request)
    _check_order([name for name, _ in events])
    start = events[0][1]["message"]
    assert start["content"] == []
    assert (start["role"], start["model"], start["stop_reason"]) == ("assistant", "smollm2-135m", None)
    assert start["usage"]["input_tokens"] > 0
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [e["delta"] for name, e in events if name == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == block.text
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": final.stop_reason, "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == final.usage.output_tokens


def test_forced_tool_use_round_trip_on_the_local_model(local: anthropic.Anthropic) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    called = local.messages.create(
        model=LOCAL,
        max_tokens=60,
        messages=[question],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=FORCE_WEATHER,  # type: ignore[arg-type]
        extra_body=GREEDY,
    )
    assert called.stop_reason == "tool_use"
    use = called.content[-1]
    assert use.type == "tool_use"
    assert use.id.startswith("toolu_")
    assert use.name == "get_weather"
    assert isinstance(use.input, dict)
    assert isinstance(use.input["city"], str)

    answered = local.messages.create(
        model=LOCAL,
        max_tokens=30,
        messages=[
            question,  # type: ignore[list-item]
            {"role": "assistant", "content": called.content},  # type: ignore[dict-item]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}]},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "none"},  # a 135M model may well call again when it may: ask for the text answer
        extra_body=GREEDY,
    )
    assert answered.stop_reason in ("end_turn", "max_tokens")
    [block] = answered.content
    assert block.type == "text"
    assert block.text


def test_streamed_tool_use_on_the_local_model(local: anthropic.Anthropic, base_url: str) -> None:
    request: dict[str, Any] = {
        "model": LOCAL,
        "max_tokens": 60,
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": [WEATHER],
        "tool_choice": FORCE_WEATHER,
        "extra_body": GREEDY,
    }
    with local.messages.stream(**request) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    [use] = final.content
    assert use.type == "tool_use"
    assert use.id.startswith("toolu_")
    assert isinstance(use.input["city"], str)

    events = _events(base_url, request)
    _check_order([name for name, _ in events])
    opening = events[1][1]["content_block"]
    assert (opening["type"], opening["name"], opening["input"]) == ("tool_use", "get_weather", {})
    assert opening["id"].startswith("toolu_")
    partial = "".join(e["delta"]["partial_json"] for name, e in events if name == "content_block_delta")
    assert json.loads(partial) == use.input
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stop_sequences_on_the_local_model(local: anthropic.Anthropic, base_url: str) -> None:
    request: dict[str, Any] = {
        "model": LOCAL,
        "max_tokens": 24,
        "messages": [{"role": "user", "content": "Describe the sea in one sentence."}],
        "extra_body": GREEDY,
    }
    free = local.messages.create(**request)
    answer = free.content[0].text  # type: ignore[union-attr]
    words = answer.split()
    assert len(words) > 4
    stop = words[3]  # greedy answers repeat: the same answer stops at its fourth word
    cut = local.messages.create(**request, stop_sequences=["NEVER-IN-THE-ANSWER", stop])
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", stop)
    assert cut.content[0].text == answer[: answer.index(stop)]  # type: ignore[union-attr]
    assert 0 < cut.usage.output_tokens < free.usage.output_tokens

    events = _events(base_url, {**request, "stop_sequences": [stop]})
    _check_order([name for name, _ in events])
    streamed = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
    assert streamed == answer[: answer.index(stop)]
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": stop}

    unmatched = local.messages.create(**request, stop_sequences=["NEVER-IN-THE-ANSWER"])
    assert unmatched.content == free.content
    assert (unmatched.stop_reason, unmatched.stop_sequence) == (free.stop_reason, None)
    assert unmatched.usage == free.usage


class Person(BaseModel):
    name: str
    age: int


def test_structured_output_on_the_local_model(local: anthropic.Anthropic) -> None:
    parsed = local.messages.parse(
        model=LOCAL,
        max_tokens=60,
        messages=[{"role": "user", "content": "Invent a person."}],
        output_format=Person,
        extra_body=GREEDY,
    )
    assert isinstance(parsed.parsed_output, Person)  # constrained by a grammar built from the schema
    assert parsed.stop_reason == "end_turn"
    assert json.loads(parsed.content[0].text) == parsed.parsed_output.model_dump()  # type: ignore[union-attr]


# -- errors in Anthropic's shape ------------------------------------------------------------------------
def test_unknown_model_is_not_found(local: anthropic.Anthropic) -> None:
    for stream in (False, True):
        with pytest.raises(anthropic.NotFoundError) as caught:
            local.messages.create(model="claude-nowhere", max_tokens=5, messages=HI, stream=stream)  # type: ignore[call-overload]
        error = caught.value
        assert error.status_code == 404
        assert error.body["type"] == "error"  # type: ignore[index]
        assert error.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        assert "claude-nowhere" in error.body["error"]["message"]  # type: ignore[index]
        assert error.request_id == error.response.headers["x-request-id"]
    with pytest.raises(anthropic.NotFoundError):
        local.messages.count_tokens(model="claude-nowhere", messages=HI)  # type: ignore[arg-type]


def test_missing_max_tokens_is_a_bad_request(local: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        local.messages.create(model=LOCAL, messages=HI, max_tokens=anthropic.NOT_GIVEN, timeout=30)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert caught.value.body["error"]["message"].startswith("max_tokens: Field required")  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": LOCAL, "max_tokens": 5, "messages": HI, "temperature": 1.5}, "temperature"),
        ({"model": LOCAL, "max_tokens": 0, "messages": HI}, "max_tokens"),
        ({"model": LOCAL, "max_tokens": 5, "messages": []}, "messages"),
        ({"model": LOCAL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "role"),
        ({"model": LOCAL, "max_tokens": 5, "messages": HI, "stop_sequences": [""]}, "stop_sequences"),
        (
            {
                "model": LOCAL,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}],
            },
            "'image' blocks are not supported",
        ),
        (
            {"model": LOCAL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "a text block needs text",
        ),
        (
            {
                "model": LOCAL,
                "max_tokens": 5,
                "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "get_weather"}]}],
            },
            "a tool_use block needs id, name and input",
        ),
        (
            {
                "model": LOCAL,
                "max_tokens": 5,
                "messages": HI,
                "tools": [WEATHER],
                "tool_choice": {"type": "tool", "name": "x"},
            },
            "names 'x', which is not among the tools",
        ),
        ({"model": LOCAL, "max_tokens": 5, "messages": HI, "tool_choice": {"type": "any"}}, "needs tools"),
        (
            {
                "model": LOCAL,
                "max_tokens": 5,
                "messages": HI,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "a tool that Anthropic's servers run",
        ),
        ({"model": LOCAL, "max_tokens": 5, "messages": HI, "tools": [{"name": "x"}]}, "input_schema is required"),
    ],
)
def test_bad_requests_say_what_is_wrong(base_url: str, body: dict[str, Any], says: str) -> None:
    response = httpx.post(f"{base_url}/v1/messages", json=body, timeout=30)
    assert says in _anthropic_error(response, 400, "invalid_request_error")
    assert response.headers["x-should-retry"] == "false"


def test_malformed_json_and_unknown_paths(base_url: str) -> None:
    broken = httpx.post(f"{base_url}/v1/messages", content=b'{"model": ', headers={"content-type": "application/json"})
    assert "not valid JSON" in _anthropic_error(broken, 400, "invalid_request_error")
    _anthropic_error(httpx.post(f"{base_url}/v1/messages/batches", json={}), 404, "not_found_error")
    _anthropic_error(httpx.get(f"{base_url}/v1/messages"), 405, "invalid_request_error")
    # The OpenAI surface keeps its own shape.
    assert httpx.post(f"{base_url}/v1/chat/completions", json={}).json()["error"]["type"] == "invalid_request_error"


def test_headers_of_anthropic_clients_are_accepted(base_url: str) -> None:
    headers = {"x-api-key": "anything", "anthropic-version": "2023-06-01", "anthropic-beta": "some-feature-2025-01-01"}
    response = httpx.post(
        f"{base_url}/v1/messages", json={"model": LOCAL, "max_tokens": 2, "messages": HI}, headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"


# -- a Claude deployment (the fake Anthropic API) -------------------------------------------------------
@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=API_KEY, model_ids=(UPSTREAM_MODEL,)).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_fake(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


@pytest.fixture(scope="module")
def config_dir(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(tmp_path_factory.mktemp("anthropic-messages-config"))
    (folder / "providers.yaml").write_text(
        f"providers:\n  claude-api: {{type: anthropic, base_url: '{fake.url}', api_key: {API_KEY}, timeout: 10}}\n"
    )
    (folder / "models.yaml").write_text(
        f"models:\n  claude: {{provider: claude-api, model: {UPSTREAM_MODEL}, aliases: [claude-sonnet-4-5]}}\n"
    )
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    return folder


def _remote_service(config_dir: Path, **settings: Any) -> LiveServer:
    values = {"CONFIG_DIR": str(config_dir), "LLM_DEFAULT_MODEL": "claude", "LLM_RETRIES": 0}
    return LiveServer(make_settings(**{**values, **settings})).start()


@pytest.fixture(scope="module")
def remote(config_dir: Path) -> Iterator[LiveServer]:
    live = _remote_service(config_dir, CIRCUIT_FAILURE_THRESHOLD=1000)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def claude(remote: LiveServer) -> anthropic.Anthropic:
    return _client(remote.url)


def test_create_through_the_anthropic_provider(claude: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    fake.plan(text("Bonjour !", input_tokens=21, output_tokens=4))
    message = claude.messages.create(
        model="claude-sonnet-4-5",  # an alias of the deployment
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}],
        messages=[{"role": "user", "content": "Hi"}],
        extra_body={"temperature": 0.2, "top_k": 5},
    )
    assert message.model == "claude"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Bonjour !"
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 4)
    [sent] = fake.messages()
    assert sent["system"] == "Be brief.\n\nAnswer in French."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == (UPSTREAM_MODEL, 50, 0.2)


def test_stream_through_the_anthropic_provider(
    claude: anthropic.Anthropic, fake: FakeAnthropic, remote: LiveServer
) -> None:
    answer = "Streams arrive one word at a time."
    fake.plan(text(answer, input_tokens=9, output_tokens=8))
    with claude.messages.stream(model="claude", max_tokens=50, messages=HI) as stream:  # type: ignore[arg-type]
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3
    assert "".join(pieces) == answer
    assert final.content[0].text == answer  # type: ignore[union-attr]
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 9, 8)
    assert fake.messages()[0]["stream"] is True

    fake.plan(text(answer, input_tokens=9, output_tokens=8))
    events = _events(remote.url, {"model": "claude", "max_tokens": 50, "messages": HI})
    _check_order([name for name, _ in events])
    assert events[-2][1]["usage"]["input_tokens"] == 9


def test_tool_round_trip_through_the_anthropic_provider(claude: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    fake.plan(tool_use("get_weather", {"city": "Paris"}, call_id="toolu_paris", preamble="Let me check."))
    question = {"role": "user", "content": "Weather in Paris?"}
    called = claude.messages.create(
        model="claude",
        max_tokens=100,
        messages=[question],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any"},
    )
    assert called.stop_reason == "tool_use"
    assert [b.type for b in called.content] == ["text", "tool_use"]
    use = called.content[1]
    assert (use.id, use.name, use.input) == ("toolu_paris", "get_weather", {"city": "Paris"})  # type: ignore[union-attr]
    [sent] = fake.messages()
    assert sent["tools"] == [WEATHER]
    assert sent["tool_choice"] == {"type": "any"}

    fake.reset()
    fake.plan(text("Sunny in Paris."))
    answered = claude.messages.create(
        model="claude",
        max_tokens=100,
        messages=[
            question,  # type: ignore[list-item]
            {"role": "assistant", "content": called.content},  # type: ignore[dict-item]
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_paris",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                    {"type": "text", "text": "Summarise."},
                ],
            },
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert answered.content[0].text == "Sunny in Paris."  # type: ignore[union-attr]
    [sent] = fake.messages()
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_paris", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_paris", "content": "sunny"},
                {"type": "text", "text": "Summarise."},
            ],
        },
    ]


def test_tool_errors_and_forced_tools_reach_claude(claude: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True, "content": "no city"}],
        },
    ]
    claude.messages.create(model="claude", max_tokens=10, messages=history, tools=[WEATHER], tool_choice=FORCE_WEATHER)  # type: ignore[arg-type]
    [sent] = fake.messages()
    assert sent["tool_choice"] == FORCE_WEATHER
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Error: no city"}
    ]


def test_streamed_tool_use_through_the_anthropic_provider(
    claude: anthropic.Anthropic, fake: FakeAnthropic, remote: LiveServer
) -> None:
    arguments = {"city": "Reykjavík", "unit": "celsius"}
    fake.plan(tool_use("get_weather", arguments, call_id="toolu_r", preamble="Checking."))
    with claude.messages.stream(model="claude", max_tokens=100, messages=HI, tools=[WEATHER]) as stream:  # type: ignore[list-item]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Checking."  # type: ignore[union-attr]
    assert (final.content[1].id, final.content[1].input) == ("toolu_r", arguments)  # type: ignore[union-attr]

    fake.plan(tool_use("get_weather", arguments, call_id="toolu_r", preamble="Checking."))
    events = _events(remote.url, {"model": "claude", "max_tokens": 100, "messages": HI, "tools": [WEATHER]})
    names = [name for name, _ in events]
    _check_order(names)
    assert names.count("content_block_start") == 2
    json_deltas = [
        e["delta"]["partial_json"] for name, e in events if name == "content_block_delta" and e["index"] == 1
    ]
    assert len(json_deltas) > 2  # the arguments arrive in fragments
    assert json.loads("".join(json_deltas)) == arguments


def test_stop_sequences_through_the_anthropic_provider(claude: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    fake.plan(text("one two END three four"))
    message = claude.messages.create(model="claude", max_tokens=50, messages=HI, stop_sequences=["END"])  # type: ignore[arg-type]
    assert message.content[0].text == "one two "  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
    assert message.usage.output_tokens == math.ceil(len("one two END") / 4)  # the generation was cut: estimated
    assert "stop_sequences" not in fake.messages()[0]  # matched by the service, which says which one it was


def test_structured_output_through_the_anthropic_provider(claude: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    fake.plan(tool_use("json_response", {"name": "Ada", "age": 36}))
    parsed = claude.messages.parse(model="claude", max_tokens=50, messages=HI, output_format=Person)  # type: ignore[arg-type]
    assert parsed.parsed_output == Person(name="Ada", age=36)
    assert parsed.stop_reason == "end_turn"
    [sent] = fake.messages()
    assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}


def test_count_tokens_of_a_remote_model_is_an_estimate(claude: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    counted = claude.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "x" * 40}])
    assert counted.input_tokens == 10  # about four characters a token
    with_tools = claude.messages.count_tokens(model="claude", messages=HI, tools=[WEATHER])  # type: ignore[list-item]
    assert with_tools.input_tokens == math.ceil((2 + len(json.dumps([_function(WEATHER)]))) / 4)
    assert fake.messages() == []  # counting bills nothing upstream


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    function = {"name": tool["name"], "parameters": tool["input_schema"], "description": tool["description"]}
    return {"type": "function", "function": function}


def test_errors_through_the_anthropic_provider(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="claude-opus-nowhere", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="claude", messages=HI, max_tokens=anthropic.NOT_GIVEN, timeout=30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("failure", "error_class", "kind"),
    [
        (Failure(529, "overloaded_error", "Overloaded"), anthropic.OverloadedError, "overloaded_error"),
        (
            Failure(429, "rate_limit_error", "slow down", {"retry-after": "7"}),
            anthropic.RateLimitError,
            "rate_limit_error",
        ),
        (
            Failure(400, "invalid_request_error", "prompt is too long"),
            anthropic.BadRequestError,
            "invalid_request_error",
        ),
        (Failure(401, "authentication_error", "invalid x-api-key"), anthropic.InternalServerError, "api_error"),
    ],
)
def test_upstream_failures_in_anthropic_terms(
    claude: anthropic.Anthropic,
    fake: FakeAnthropic,
    failure: Failure,
    error_class: type[anthropic.APIStatusError],
    kind: str,
) -> None:
    fake.plan(failure)
    with pytest.raises(error_class) as caught:
        claude.messages.create(model="claude", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert caught.value.body["error"]["type"] == kind  # type: ignore[index]
    assert API_KEY not in caught.value.response.text
    if failure.status == 429:
        assert caught.value.response.headers["retry-after"] == "7"


def test_an_error_after_the_stream_started_is_an_error_event(
    claude: anthropic.Anthropic, fake: FakeAnthropic, remote: LiveServer
) -> None:
    fake.plan(text("Half of an answer", stream_error="overloaded_error"))
    events = _events(remote.url, {"model": "claude", "max_tokens": 50, "messages": HI})
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-1] == "error"
    assert "message_stop" not in names
    error = events[-1][1]
    assert error["error"]["type"] == "overloaded_error"
    assert "overloaded_error" in error["error"]["message"]
    streamed = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
    assert streamed == "Half of an answer"

    fake.plan(text("Half of an answer", stream_error="overloaded_error"))
    with (
        pytest.raises(anthropic.APIStatusError) as caught,  # the SDK raises on the error event
        claude.messages.stream(model="claude", max_tokens=50, messages=HI) as stream,  # type: ignore[arg-type]
    ):
        stream.get_final_message()
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


# -- auth, rate limits and the body cap -----------------------------------------------------------------
@pytest.fixture(scope="module")
def secured(config_dir: Path) -> Iterator[tuple[LiveServer, str]]:
    database = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='sop-llm-anthropic-auth-')) / 'auth.db'}"
    live = _remote_service(config_dir, DATABASE_URL=database, AUTH_ENABLED=True, API_KEY_CACHE_SECONDS=0)
    created = subprocess.run(
        [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "claude code", "--scope", "user"],
        env={**os.environ, "DATABASE_URL": database, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        check=True,
    )
    yield live, created.stdout.strip().splitlines()[-1]
    live.stop()


def test_x_api_key_carries_a_service_key(secured: tuple[LiveServer, str], fake: FakeAnthropic) -> None:
    live, key = secured
    fake.plan(text("Authorised."))
    # As Claude Code sends ANTHROPIC_API_KEY: `x-api-key` alone (this SDK version sends its api_key as a Bearer
    # token, so the header is set by hand and Authorization left out).
    client = anthropic.Anthropic(
        base_url=live.url,
        max_retries=0,
        default_headers={"x-api-key": key, "Authorization": anthropic.omit},  # type: ignore[dict-item]
    )
    raw = client.messages.with_raw_response.create(model="claude", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert raw.http_request.headers["x-api-key"] == key
    assert "authorization" not in raw.http_request.headers
    assert raw.parse().content[0].text == "Authorised."  # type: ignore[union-attr]
    # The SDK's own way (`api_key`, sent as `Authorization: Bearer`), and ANTHROPIC_AUTH_TOKEN's (`auth_token`).
    for credentials in ({"api_key": key}, {"auth_token": key}):
        counted = anthropic.Anthropic(base_url=live.url, max_retries=0, **credentials).messages.count_tokens(
            model="claude",
            messages=HI,  # type: ignore[arg-type]
        )
        assert counted.input_tokens > 0


def test_a_wrong_key_is_an_authentication_error(secured: tuple[LiveServer, str]) -> None:
    live, _ = secured
    with pytest.raises(anthropic.AuthenticationError) as caught:
        _client(live.url, api_key="sk-ant-not-a-service-key").messages.create(model="claude", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert "sk-ant-not-a-service-key" not in caught.value.response.text
    missing = httpx.post(f"{live.url}/v1/messages", json={"model": "claude", "max_tokens": 5, "messages": HI})
    _anthropic_error(missing, 401, "authentication_error")


def test_rate_limit_and_body_cap_in_anthropic_shape(config_dir: Path, fake: FakeAnthropic) -> None:
    live = _remote_service(config_dir, RATE_LIMIT_REQUESTS_PER_MINUTE=2, MAX_REQUEST_BODY_BYTES=2000)
    try:
        client = _client(live.url)
        with pytest.raises(anthropic.APIStatusError) as too_large:
            client.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "x" * 3000}])
        assert too_large.value.status_code == 413
        assert too_large.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
        for _ in range(2):
            client.messages.create(model="claude", max_tokens=5, messages=HI)  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model="claude", max_tokens=5, messages=HI)  # type: ignore[arg-type]
        assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert int(limited.value.response.headers["retry-after"]) >= 1
    finally:
        live.stop()

"""The Responses API (/v1/responses) through the official `openai` SDK, unmodified: on the local llama.cpp model and
on the `openai` provider in front of llama-cpp-python's own server. A 135M model answers, so the tests check the
protocol and the structure of what comes back, not its wisdom; tool calls are forced with tool_choice.

Also: the order of streamed events, structured output through `.parse()`, function-calling round trips (stateless
and with previous_response_id), stored responses (retrieve, input items, delete), a failure after a stream started
(a scripted upstream), owner scoping with auth on, and clear 400/404s for bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.fakes.openai_server import FakeOpenAI
from tests.live_server import LiveServer, make_settings
from tests.llama_server import running_llama_server

pytestmark = [pytest.mark.integration, pytest.mark.api]

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
FORCE_WEATHER = {"type": "function", "name": "get_weather"}


class City(BaseModel):
    name: str
    country: str


@dataclass
class Target:
    client: openai.OpenAI
    model: str
    url: str


# --- servers ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    with running_llama_server() as url:
        yield url


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def remote_config(llama_server: str, fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Remote deployments only: llama.cpp's server behind the `openai` provider, and a scripted upstream."""
    folder = Path(tmp_path_factory.mktemp("responses-remote"))
    (folder / "providers.yaml").write_text(
        f"""
providers:
  llama-server: {{type: openai, base_url: "{llama_server}", options: {{json_format: json_object_schema}}}}
  scripted: {{type: openai, base_url: "{fake_upstream.url}", timeout: 5}}
"""
    )
    (folder / "models.yaml").write_text(
        """
models:
  remote-smol: {provider: llama-server, model: smollm2}
  midstream: {provider: scripted, model: midstream}
  broken: {provider: scripted, model: fail-500}
"""
    )
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    return str(folder)


@pytest.fixture(scope="module")
def remote_service(remote_config: str) -> Iterator[LiveServer]:
    live = LiveServer(make_settings(CONFIG_DIR=remote_config, LLM_DEFAULT_MODEL="remote-smol", LLM_RETRIES=0)).start()
    yield live
    live.stop()


@pytest.fixture(scope="module", params=["local", "remote"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "local":
        url = str(request.getfixturevalue("base_url"))
        model = "smollm2"
    else:
        url = request.getfixturevalue("remote_service").url
        model = "remote-smol"
    return Target(openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0), model, url)


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-checked", max_retries=0)


# --- helpers ------------------------------------------------------------------------------------------------------


def _check_order(events: list[Any]) -> None:
    """The documented order: created, in_progress, then each output item from added to done (a message with one
    output_text part: part added, text deltas, text done, part done), then completed or incomplete."""
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"], types
    assert types[-1] in ("response.completed", "response.incomplete"), types
    assert [event.sequence_number for event in events] == list(range(len(events)))
    body = types[2:-1]
    index = 0
    while index < len(body):
        added = events[2 + index]
        assert added.type == "response.output_item.added", types
        item = added.item
        if item.type == "message":
            expected_head = ["response.output_item.added", "response.content_part.added"]
            tail = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
            delta = "response.output_text.delta"
        else:
            assert item.type == "function_call"
            expected_head = ["response.output_item.added"]
            tail = ["response.function_call_arguments.done", "response.output_item.done"]
            delta = "response.function_call_arguments.delta"
        assert body[index : index + len(expected_head)] == expected_head, types
        index += len(expected_head)
        while body[index] == delta:
            assert events[2 + index].item_id == item.id
            index += 1
        assert body[index : index + len(tail)] == tail, types
        assert events[2 + index + len(tail) - 1].item.id == item.id
        index += len(tail)


def _post(url: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/responses", json=body, headers=headers, timeout=120)


# --- every model --------------------------------------------------------------------------------------------------


def test_create(target: Target) -> None:
    reply = target.client.responses.create(
        model=target.model,
        input="Say hello.",
        instructions="You are terse.",
        max_output_tokens=24,
        temperature=0,
        metadata={"purpose": "test"},
    )
    assert reply.object == "response"
    assert reply.id.startswith("resp_")
    assert reply.status in ("completed", "incomplete")
    assert reply.model == ("smollm2-135m" if target.model == "smollm2" else target.model)
    [message] = reply.output
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.status == reply.status
    assert message.content[0].type == "output_text"
    assert reply.output_text
    assert reply.output_text == message.content[0].text
    usage = reply.usage
    assert usage is not None
    assert usage.input_tokens > 0
    assert 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    # The request's settings, echoed.
    assert reply.instructions == "You are terse."
    assert reply.max_output_tokens == 24
    assert reply.temperature == 0
    assert reply.metadata == {"purpose": "test"}
    assert reply.tool_choice == "auto"
    assert reply.tools == []
    assert reply.store is True
    assert reply.parallel_tool_calls is True
    assert reply.text is not None and reply.text.format is not None and reply.text.format.type == "text"


def test_cut_short_is_incomplete(target: Target) -> None:
    reply = target.client.responses.create(
        model=target.model, input="Write a long story about a dragon.", max_output_tokens=5, temperature=0
    )
    assert reply.status == "incomplete"
    assert reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output[0].status == "incomplete"
    assert reply.usage is not None
    assert reply.usage.output_tokens == 5


def test_stream_events_in_order_and_match_the_whole_answer(target: Target) -> None:
    # Room for the whole answer (~40 tokens here; its length depends on the CPU's arithmetic). A stream cut short
    # ends with `response.incomplete`, for which the SDK's get_final_response() has nothing: the last event says.
    request: dict[str, Any] = {"model": target.model, "input": "Name three fruits.", "max_output_tokens": 200}
    whole = target.client.responses.create(**request, temperature=0)
    with target.client.responses.stream(**request, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response() if events[-1].type == "response.completed" else events[-1].response
    _check_order(events)
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    [done] = [event for event in events if event.type == "response.output_text.done"]
    assert deltas == done.text == final.output_text
    created = events[0].response
    assert created.id == final.id
    assert created.status == "in_progress"
    assert created.output == []
    assert events[-1].type == f"response.{final.status}"
    # Greedy decoding repeats itself here; llama.cpp's server may answer differently at temperature 0 from one
    # request to the next, and reports no usage in streams.
    if target.model == "smollm2":
        assert final.output_text == whole.output_text
        assert final.status == whole.status
        assert final.usage is not None and whole.usage is not None
        assert final.usage.output_tokens == whole.usage.output_tokens
    # A streamed response is stored like any other.
    assert target.client.responses.retrieve(final.id).output_text == final.output_text


def test_parse_with_a_pydantic_model(target: Target) -> None:
    reply = target.client.responses.parse(
        model=target.model,
        input="Name a city and its country.",
        text_format=City,
        max_output_tokens=60,
        temperature=0,
    )
    assert reply.status == "completed"
    assert isinstance(reply.output_parsed, City)
    assert reply.text is not None and reply.text.format is not None
    assert reply.text.format.type == "json_schema"
    verdict = reply.model_extra["sop_json"] if reply.model_extra else None
    assert verdict is not None and verdict["provenance"] in ("parsed", "repaired_locally")


def test_stream_with_a_pydantic_model(target: Target) -> None:
    with target.client.responses.stream(
        model=target.model,
        input="Name a city and its country.",
        text_format=City,
        max_output_tokens=60,
        temperature=0,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    _check_order(events)
    assert isinstance(final.output_parsed, City)


def test_function_call_round_trip(target: Target) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    called = target.client.responses.create(
        model=target.model,
        input=[question],
        tools=[WEATHER_TOOL],
        tool_choice=FORCE_WEATHER,
        max_output_tokens=40,
        temperature=0,
        store=False,
    )
    assert called.status == "completed"
    calls = [item for item in called.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert call.id is not None and call.id.startswith("fc_")
    assert call.call_id
    assert call.status == "completed"
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert called.tools[0].type == "function" and called.tools[0].name == "get_weather"
    assert called.tool_choice.type == "function"  # type: ignore[union-attr]
    # The caller runs the function and sends its output back with the whole conversation (nothing was stored).
    answered = target.client.responses.create(
        model=target.model,
        input=[
            question,
            *called.output,  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear", "celsius": 21}'},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="none",
        max_output_tokens=40,
        temperature=0,
        store=False,
    )
    assert [item.type for item in answered.output] == ["message"]
    assert answered.output_text


def test_streamed_function_call(target: Target) -> None:
    with target.client.responses.stream(
        model=target.model,
        input="What is the weather in Rome?",
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice=FORCE_WEATHER,  # type: ignore[arg-type]
        max_output_tokens=40,
        temperature=0,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    _check_order(events)
    [call] = [item for item in final.output if item.type == "function_call"]
    [done] = [event for event in events if event.type == "response.function_call_arguments.done"]
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == done.arguments == call.arguments
    assert call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert call.parsed_arguments == json.loads(call.arguments)  # strict tool: the SDK parses its arguments


def test_previous_response_id_continues_the_conversation(target: Target) -> None:
    first = target.client.responses.create(
        model=target.model, input="My name is Ada. Say OK.", max_output_tokens=10, temperature=0
    )
    second = target.client.responses.create(
        model=target.model,
        previous_response_id=first.id,
        input="What is my name?",
        max_output_tokens=10,
        temperature=0,
    )
    assert second.previous_response_id == first.id
    assert second.output_text
    items = list(target.client.responses.input_items.list(second.id, order="asc"))
    assert [(item.type, getattr(item, "role", None)) for item in items] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert items[1].id == first.output[0].id
    assert items[1].content[0].text == first.output_text  # type: ignore[union-attr]
    assert items[2].content[0].text == "What is my name?"  # type: ignore[union-attr]
    # The model read the whole conversation.
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens


def test_function_call_round_trip_with_previous_response_id(target: Target) -> None:
    called = target.client.responses.create(
        model=target.model,
        input="What is the weather in Oslo?",
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice=FORCE_WEATHER,  # type: ignore[arg-type]
        max_output_tokens=40,
        temperature=0,
    )
    [call] = [item for item in called.output if item.type == "function_call"]
    answered = target.client.responses.create(
        model=target.model,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "snow, -3 C"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="none",
        max_output_tokens=40,
        temperature=0,
    )
    assert answered.output[0].type == "message"
    assert answered.output_text
    types = [item.type for item in target.client.responses.input_items.list(answered.id, order="asc")]
    assert types == ["message", "function_call", "function_call_output"]


def test_retrieve_and_delete(target: Target) -> None:
    created = target.client.responses.create(model=target.model, input="Hi!", max_output_tokens=8, temperature=0)
    fetched = target.client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    target.client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        target.client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        target.client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        target.client.responses.input_items.list(created.id)


# --- the local model only ----------------------------------------------------------------------------------------


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    reply = client.responses.create(model="smollm2", input="Hi!", max_output_tokens=4, store=False)
    assert reply.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="smollm2", previous_response_id=reply.id, input="And?", max_output_tokens=4)
    assert reply.id in caught.value.message
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_input_items_pages(client: openai.OpenAI) -> None:
    reply = client.responses.create(
        model="smollm2",
        input=[
            {"role": "developer", "content": "Answer in one word."},
            {"role": "user", "content": [{"type": "input_text", "text": "Colour of the sky?"}]},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "And grass?"},
        ],
        max_output_tokens=4,
    )
    newest_first = list(client.responses.input_items.list(reply.id))
    assert [item.role for item in newest_first] == ["user", "assistant", "user", "developer"]  # type: ignore[union-attr]
    assert all(item.id and item.id.startswith("msg_") for item in newest_first)
    paged = client.responses.input_items.list(reply.id, limit=3, order="asc")
    assert [item.id for item in paged.data] == [item.id for item in reversed(newest_first)][:3]
    assert paged.has_more is True
    assert paged.last_id == paged.data[-1].id
    rest = client.responses.input_items.list(reply.id, limit=3, order="asc", after=paged.last_id)
    assert [item.id for item in rest.data] == [newest_first[0].id]
    assert rest.has_more is False
    every = [item.id for item in client.responses.input_items.list(reply.id, limit=1, order="asc")]  # auto-paging
    assert every == [item.id for item in reversed(newest_first)]
    assert newest_first[1].content[0].type == "output_text"  # type: ignore[union-attr]
    assert newest_first[3].content[0].type == "input_text"  # type: ignore[union-attr]


def test_raw_events_are_typed_server_sent_events(base_url: str) -> None:
    body = {"model": "smollm2", "input": "Hi!", "max_output_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/responses", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = response.read().decode().strip().split("\n\n")
    for frame in frames:
        event_line, data_line = frame.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
        assert isinstance(data["sequence_number"], int)
    last = json.loads(frames[-1].split("\n")[1].removeprefix("data: "))
    assert last["type"] in ("response.completed", "response.incomplete")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, 400, "'web_search_call' items are not supported"),
        ({"input": [{"content": "no role, no type"}]}, 400, "input[0]: every item needs a type"),
        ({"input": [{"type": "message", "role": "robot", "content": "hi"}]}, 400, "input[0].role"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "item references are not supported"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            400,
            "input[0].content[0]: 'input_image' parts are not supported",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "call_x", "output": "42"}]},
            400,
            "call_id 'call_x' answers no function_call",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}]},
            400,
            "input[0].arguments: must be a JSON string",
        ),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, 400, "'web_search' tools are not supported"),
        (
            {"input": "hi", "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            400,
            "the Responses API takes name, description and parameters at the top level",
        ),
        ({"input": "hi", "tools": [WEATHER_TOOL], "tool_choice": FORCE_WEATHER | {"name": "x"}}, 400, "names 'x'"),
        ({"input": "hi", "tool_choice": "required"}, 400, "'required' needs at least one tool"),
        ({"input": "hi", "tool_choice": {"type": "file_search"}}, 400, "tool_choice"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, 400, "text.format.schema"),
        ({"input": "hi", "previous_response_id": "nope"}, 400, "'nope' is not a response id"),
        ({"input": "hi", "previous_response_id": "resp_unknown"}, 404, "no stored response with id 'resp_unknown'"),
        ({"input": "hi", "background": True}, 400, "background responses are not supported"),
        ({"input": "hi", "truncation": "auto"}, 400, "'auto' is not supported"),
        ({"input": "hi", "metadata": {str(i): "v" for i in range(17)}}, 400, "at most 16"),
        ({"input": []}, 400, "at least one item"),
        ({"input": "hi", "max_output_tokens": 0}, 400, "max_output_tokens"),
        ({"input": "hi", "model": "gpt-7-ultra"}, 404, "gpt-7-ultra"),
    ],
)
def test_bad_input_is_a_clear_4xx(base_url: str, body: dict[str, Any], status: int, words: str) -> None:
    for stream in (False, True):
        response = _post(base_url, {"model": "smollm2", "max_output_tokens": 4, **body, "stream": stream})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert words in error["message"], error
        assert error["type"] == "invalid_request_error"


def test_bad_input_through_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="smollm2", input="hi", tools=[{"type": "web_search"}])
    assert "'web_search' tools are not supported" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="smollm2", input="hi", previous_response_id="resp_0123")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_0123")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.input_items.list(
            client.responses.create(model="smollm2", input="hi", max_output_tokens=2).id, after="msg_nowhere"
        )
    assert "after: no item 'msg_nowhere'" in caught.value.message


# --- failures of the upstream -------------------------------------------------------------------------------------


def test_failure_before_the_stream_starts_is_a_plain_http_error(remote_service: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{remote_service.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="broken", input="hi", stream=True)


def test_failure_after_the_stream_started_is_response_failed(remote_service: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{remote_service.url}/v1", api_key="x", max_retries=0)
    events = list(client.responses.create(model="midstream", input="hi", stream=True))
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in types
    assert types[-2:] == ["error", "response.failed"]
    assert "upstream fell over" in events[-2].message  # type: ignore[union-attr]
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed"
    assert failed.error is not None and "upstream fell over" in failed.error.message
    assert failed.output[0].status == "incomplete"
    assert client.responses.retrieve(failed.id).status == "failed"


# --- owner scoping ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(remote_config: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, str]]:
    """(url, admin key, Alice's key, Bob's key) of a server with auth on."""
    database = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('responses-auth')}/auth.db"
    live = LiveServer(
        make_settings(
            CONFIG_DIR=remote_config,
            LLM_DEFAULT_MODEL="remote-smol",
            DATABASE_URL=database,
            AUTH_ENABLED=True,
            API_KEY_CACHE_SECONDS=0,
        )
    ).start()
    created = subprocess.run(
        [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "admin", "--scope", "admin"],
        env={**os.environ, "DATABASE_URL": database, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        check=True,
    )
    admin = created.stdout.strip().splitlines()[-1]
    users = []
    for name in ("alice", "bob"):
        made = httpx.post(
            f"{live.url}/api/v1/admin/keys",
            json={"name": name, "scope": "user"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert made.status_code == 201, made.text
        users.append(made.json()["key"])
    yield live.url, admin, users[0], users[1]
    live.stop()


def test_a_stored_response_is_visible_to_its_creator_only(secured: tuple[str, str, str, str]) -> None:
    url, admin, alice_key, bob_key = secured
    alice = openai.OpenAI(base_url=f"{url}/v1", api_key=alice_key, max_retries=0)
    bob = openai.OpenAI(base_url=f"{url}/v1", api_key=bob_key, max_retries=0)
    root = openai.OpenAI(base_url=f"{url}/v1", api_key=admin, max_retries=0)
    mine = alice.responses.create(input="Hi!", max_output_tokens=4)
    assert alice.responses.retrieve(mine.id).id == mine.id
    for other in (bob, root):
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(input="Go on.", previous_response_id=mine.id, max_output_tokens=4)
    # Nothing of Bob's attempts touched it; Alice continues and deletes it.
    follow = alice.responses.create(input="Go on.", previous_response_id=mine.id, max_output_tokens=4)
    assert follow.previous_response_id == mine.id
    alice.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(mine.id)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="sop_wrong", max_retries=0).responses.retrieve(follow.id)


def test_stored_responses_expire(fake_upstream: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "providers.yaml").write_text(f'providers:\n  fake: {{type: openai, base_url: "{fake_upstream.url}"}}\n')
    (tmp_path / "models.yaml").write_text("models:\n  upstream: {provider: fake, model: ok}\n")
    (tmp_path / "embeddings.yaml").write_text("embeddings: {}\n")
    live = LiveServer(
        make_settings(CONFIG_DIR=str(tmp_path), LLM_DEFAULT_MODEL="upstream", RESPONSES_TTL_DAYS=2 / 86400)
    ).start()  # two seconds
    try:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        first = client.responses.create(model="upstream", input="hi")
        assert client.responses.retrieve(first.id).id == first.id
        time.sleep(2.5)
        with pytest.raises(openai.NotFoundError):  # gone as soon as it expires
            client.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="upstream", input="and?", previous_response_id=first.id)
        live.app.state.services.responses._purged_at = float("-inf")  # as if the last purge was an hour ago
        client.responses.create(model="upstream", input="again")  # a save deletes what expired
        database = live.app.state.services.settings.database_url.split("///", 1)[1]
        with sqlite3.connect(database) as connection:
            ids = {row[0] for row in connection.execute("SELECT id FROM responses")}
        assert first.id not in ids
        assert len(ids) == 1
    finally:
        live.stop()

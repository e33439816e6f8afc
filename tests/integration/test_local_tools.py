"""Function calling on the local llamacpp provider (SmolLM2), through the official SDK."""

from __future__ import annotations

import json

import openai
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.api]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
        },
    },
]


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="x")


def _ask(client: openai.OpenAI, question: str, tool_choice: object, **extra: object) -> object:
    return client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": question}],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice=tool_choice,  # type: ignore[arg-type]
        max_tokens=60,
        temperature=0,
        **extra,  # type: ignore[arg-type]
    )


def test_named_tool_call_is_well_formed(client: openai.OpenAI) -> None:
    reply = _ask(client, "What is the weather in Paris?", {"type": "function", "function": {"name": "get_weather"}})
    choice = reply.choices[0]  # type: ignore[attr-defined]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_required_tool_call_picks_a_tool_and_fills_its_schema(client: openai.OpenAI) -> None:
    reply = _ask(client, "Add 2 and 3.", "required")
    (call,) = reply.choices[0].message.tool_calls  # type: ignore[attr-defined]
    arguments = json.loads(call.function.arguments)
    if call.function.name == "add":
        assert set(arguments) == {"a", "b"}
        assert all(isinstance(v, int | float) for v in arguments.values())
    else:
        assert call.function.name == "get_weather"
        assert isinstance(arguments["city"], str)


def test_streamed_tool_call_has_index_id_name_and_arguments(client: openai.OpenAI) -> None:
    stream = _ask(client, "Add 2 and 3.", {"type": "function", "function": {"name": "add"}}, stream=True)
    calls, finish = [], None
    for chunk in stream:  # type: ignore[attr-defined]
        calls.extend(chunk.choices[0].delta.tool_calls or [])
        finish = chunk.choices[0].finish_reason or finish
    (call,) = calls
    assert call.index == 0
    assert call.id
    assert call.function.name == "add"
    assert json.loads(call.function.arguments) == {"a": 2, "b": 3}
    assert finish == "tool_calls"


def test_auto_answers_with_text_or_a_valid_call(client: openai.OpenAI) -> None:
    reply = _ask(client, "Tell me a one-line joke.", "auto")
    message = reply.choices[0].message  # type: ignore[attr-defined]
    if message.tool_calls:
        assert message.tool_calls[0].function.name in {"get_weather", "add"}
        json.loads(message.tool_calls[0].function.arguments)
    else:
        assert message.content


def test_tool_results_in_the_history_are_used(client: openai.OpenAI) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "tool_calls": [call]},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21C"},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
        max_tokens=40,
        temperature=0,
    )
    assert reply.choices[0].message.content
    assert "21" in reply.choices[0].message.content


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    reply = _ask(client, "What is the weather in Paris?", "none")
    assert reply.choices[0].message.tool_calls is None  # type: ignore[attr-defined]
    assert reply.choices[0].message.content  # type: ignore[attr-defined]

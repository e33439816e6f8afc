"""The `openai` provider against a real OpenAI-compatible server nobody here wrote: llama-cpp-python's own server
(`llama_cpp.server`) on the embedded GGUF, started on a free port. Clients use the official SDK through our /v1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.live_server import LiveServer, make_settings
from tests.llama_server import running_llama_server

pytestmark = [pytest.mark.integration, pytest.mark.api]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    with running_llama_server() as url:
        yield url


@pytest.fixture(scope="module")
def service(llama_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = Path(tmp_path_factory.mktemp("openai-provider"))
    (folder / "providers.yaml").write_text(
        f"""
providers:
  llama-server:
    type: openai
    base_url: {llama_server}
    api_key: ${{LLAMA_SERVER_KEY:-unused}}
    options: {{json_format: json_object_schema}}
"""
    )
    (folder / "models.yaml").write_text("models:\n  remote-smol: {provider: llama-server, model: smollm2}\n")
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    live = LiveServer(make_settings(CONFIG_DIR=str(folder), LLM_DEFAULT_MODEL="remote-smol")).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(service: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key="x")


def test_chat(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="remote-smol", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0
    )
    assert reply.model == "remote-smol"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0


def test_streaming_matches_the_whole_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Name two colours."}]
    whole = client.chat.completions.create(model="remote-smol", messages=messages, max_tokens=20, temperature=0)
    stream = client.chat.completions.create(
        model="remote-smol",
        messages=messages,
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    # llama.cpp's server sends no usage in streams; the usage chunk is still there, and honest about it.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is None


def test_tools(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="remote-smol",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice=FORCE_WEATHER,
        max_tokens=40,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_streaming_tools(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="remote-smol",
        messages=[{"role": "user", "content": "What is the weather in Rome?"}],
        tools=[WEATHER_TOOL],
        tool_choice=FORCE_WEATHER,
        max_tokens=40,
        temperature=0,
        stream=True,
    )
    names, arguments, finish = set(), "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            assert call.index == 0
            if call.function and call.function.name:
                names.add(call.function.name)
            if call.function and call.function.arguments:
                arguments += call.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert names == {"get_weather"}
    assert isinstance(json.loads(arguments)["city"], str)
    assert finish == "tool_calls"


def test_json_schema_is_passed_through(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"animal": {"type": "string"}}, "required": ["animal"]}
    reply = client.chat.completions.create(
        model="remote-smol",
        messages=[{"role": "user", "content": "Name an animal, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "animal", "schema": schema}},
        max_tokens=30,
        temperature=0,
    )
    assert isinstance(json.loads(reply.choices[0].message.content or "")["animal"], str)


def test_health_uses_the_model_list(service: LiveServer) -> None:
    service_health = httpx.get(f"{service.url}/api/v1/providers").json()["providers"][0]
    deadline = time.monotonic() + 10
    while service_health["health"]["ok"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
        service_health = httpx.get(f"{service.url}/api/v1/providers").json()["providers"][0]
    assert service_health["health"] == {**service_health["health"], "ok": True, "detail": "model list answered"}
    assert service_health["type"] == "openai"


def test_sampling_settings_reach_the_upstream(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Write one sentence about the sea."}]

    def say(max_tokens: int = 12, **settings: object) -> str:
        answer = client.chat.completions.create(  # type: ignore[call-overload]
            model="remote-smol", messages=messages, max_tokens=max_tokens, **settings
        )
        return str(answer.choices[0].message.content)

    # llama.cpp's server keeps the last prompt's KV cache: the first request evaluates the whole prompt, each later
    # one only its last token. One request first, so that every answer compared below comes from the same state
    # (what this test proves is that the settings reach the upstream, not how the upstream batches).
    say(temperature=0, max_tokens=1)
    greedy = say(temperature=0)
    # top_k (llama.cpp's server takes it, as vLLM does) of 1 makes a hot, seeded draw greedy.
    assert say(temperature=1.5, seed=5, extra_body={"top_k": 1}) == greedy
    assert say(temperature=1.5, seed=6, extra_body={"top_k": 1}) == greedy
    with pytest.raises(openai.BadRequestError, match="log probabilities"):
        client.chat.completions.create(model="remote-smol", messages=messages, max_tokens=2, logprobs=True)

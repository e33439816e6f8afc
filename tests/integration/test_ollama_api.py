"""Ollama's API (/api/tags, /api/show, /api/ps, /api/version, /api/chat, /api/generate, /api/embed, /api/embeddings)
through the official `ollama` Python client, on the local models (SmolLM2-135M: the tests check structure and
protocol, not wisdom) and on remote deployments served by the fake OpenAI-compatible and Anthropic upstreams.
Raw httpx where the wire format itself is checked (NDJSON lines, error bodies) or where a request carries what
the client cannot send (the non-standard `tool_choice`); also auth with a user key, and its usage."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import ollama
import pytest
from pydantic import BaseModel

from tests.fakes.anthropic_server import FakeAnthropic, text, tool_use
from tests.fakes.openai_server import FakeOpenAI
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

LOCAL = "smollm2"
EMBEDDER = "all-minilm-l6-v2"
GREEDY = {"temperature": 0, "num_predict": 12}
HI = [{"role": "user", "content": "Name a colour."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


def _lines(url: str, path: str, body: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    """The NDJSON objects of a streamed answer, each line checked to be one JSON object."""
    with httpx.stream("POST", f"{url}{path}", json=body, headers=headers, timeout=300) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        raw = r.read().decode()
    assert raw.endswith("\n")
    return [json.loads(line) for line in raw.removesuffix("\n").split("\n")]


def _check_final(final: Any) -> None:
    """The last object: done, why, the counts and the nanosecond durations (which add up)."""
    assert final.done is True
    assert final.done_reason in ("stop", "length")
    assert final.prompt_eval_count > 0
    assert final.eval_count >= 1
    assert final.load_duration == 0
    assert final.prompt_eval_duration > 0
    assert final.eval_duration >= 0
    assert final.total_duration >= final.prompt_eval_duration + final.eval_duration
    assert final.total_duration < 600 * 10**9  # nanoseconds, not microseconds or seconds
    assert CREATED_AT.match(final.created_at)


def _ollama_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    return message


# -- models ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(base_url: str) -> ollama.Client:
    return ollama.Client(host=base_url)


def test_version_is_open_and_tags_list_every_model(client: ollama.Client, base_url: str) -> None:
    version = httpx.get(f"{base_url}/api/version")
    assert version.status_code == 200
    assert re.fullmatch(r"\d+\.\d+\.\d+", version.json()["version"])
    listed = {m.model: m for m in client.list().models}
    assert {"smollm2-135m:latest", "smollm2-135m-hf:latest", "all-minilm-l6-v2:latest"} <= set(listed)
    assert "smollm2:latest" not in listed  # aliases are accepted, not listed
    smol = listed["smollm2-135m:latest"]
    assert smol.details is not None
    assert (smol.details.format, smol.details.family, smol.details.families) == ("gguf", "llama", ["llama"])
    assert (smol.details.parameter_size, smol.details.quantization_level) == ("135M", "Q4_1")
    assert smol.size is not None
    assert smol.size > 50_000_000  # the GGUF file
    assert smol.digest is not None
    assert re.fullmatch(r"[0-9a-f]{64}", smol.digest)
    assert isinstance(smol.modified_at, datetime)
    raw = {m["name"]: m for m in httpx.get(f"{base_url}/api/tags").json()["models"]}
    assert raw["smollm2-135m:latest"]["model"] == "smollm2-135m:latest"
    assert raw["smollm2-135m:latest"]["capabilities"] == ["completion", "tools"]
    assert raw["smollm2-135m:latest"]["details"]["context_length"] == 2048
    embedder = raw["all-minilm-l6-v2:latest"]
    assert embedder["capabilities"] == ["embedding"]
    assert (embedder["details"]["family"], embedder["details"]["embedding_length"]) == ("bert", 384)
    assert embedder["size"] > 0


def test_show_describes_the_model_as_served(client: ollama.Client) -> None:
    shown = client.show(f"{LOCAL}:latest")  # an alias, tagged as clients send it
    assert shown.capabilities == ["completion", "tools"]
    assert shown.details is not None
    assert (shown.details.format, shown.details.family, shown.details.quantization_level) == ("gguf", "llama", "Q4_1")
    assert shown.modelinfo is not None
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 2048  # the served context, not the file's 8192
    assert shown.modelinfo["general.parameter_count"] == 135_000_000
    assert shown.modelinfo["tokenizer.ggml.tokens"] == []  # arrays are not listed
    assert shown.template and "im_start" in shown.template  # the GGUF's chat template
    assert shown.modelfile is not None
    assert shown.modelfile.startswith("# Modelfile generated by sop-llm")
    assert "FROM embedded:smollm2-135m-instruct" in shown.modelfile
    assert shown.parameters is not None
    assert re.search(r"^num_ctx\s+2048$", shown.parameters, re.MULTILINE)
    assert shown.license == "apache-2.0"
    embedder = client.show(EMBEDDER)
    assert embedder.capabilities == ["embedding"]
    assert embedder.modelinfo is not None
    assert embedder.modelinfo["bert.embedding_length"] == 384
    assert embedder.modelinfo["general.parameter_count"] > 20_000_000


def test_ps_lists_the_loaded_models(client: ollama.Client) -> None:
    running = {m.model: m for m in client.ps().models}
    assert {"smollm2-135m:latest", "all-minilm-l6-v2:latest"} <= set(running)
    assert "smollm2-135m-hf:latest" not in running  # configured, never loaded
    smol = running["smollm2-135m:latest"]
    assert (smol.size_vram, smol.context_length) == (0, 2048)
    assert smol.size is not None
    assert smol.size > 0
    assert smol.expires_at is not None
    assert smol.expires_at > datetime.now(UTC)  # loaded at startup: kept for good


# -- chat and generate ----------------------------------------------------------------------------------
def test_chat_streamed_is_the_whole_answer_in_pieces(client: ollama.Client, base_url: str) -> None:
    whole = client.chat(model=LOCAL, messages=HI, options=GREEDY)
    assert whole.model == LOCAL  # the name as the client gave it
    assert whole.message.role == "assistant"
    assert whole.message.content
    assert not whole.message.tool_calls
    _check_final(whole)
    assert whole.eval_count is not None
    assert whole.eval_count <= 12

    parts = list(client.chat(model=LOCAL, messages=HI, options=GREEDY, stream=True))
    assert len(parts) > 2
    assert all(part.done is False for part in parts[:-1])
    final = parts[-1]
    _check_final(final)
    assert "".join(part.message.content or "" for part in parts) == whole.message.content
    assert (final.prompt_eval_count, final.eval_count, final.done_reason) == (
        whole.prompt_eval_count,
        whole.eval_count,
        whole.done_reason,
    )

    # Streaming is Ollama's default: without `stream` the answer is NDJSON.
    lines = _lines(base_url, "/api/chat", {"model": LOCAL, "messages": HI, "options": GREEDY})
    assert "".join(line["message"]["content"] for line in lines) == whole.message.content
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert set(lines[0]) == {"model", "created_at", "message", "done"}
    assert {
        "done_reason",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    } <= set(lines[-1])


async def test_async_client_chat_stream(base_url: str) -> None:
    aclient = ollama.AsyncClient(host=base_url)
    pieces = [part async for part in await aclient.chat(model=LOCAL, messages=HI, options=GREEDY, stream=True)]
    whole = await aclient.chat(model=LOCAL, messages=HI, options=GREEDY)
    assert "".join(p.message.content or "" for p in pieces) == whole.message.content
    assert pieces[-1].done


def test_generate_templated_and_raw(client: ollama.Client) -> None:
    whole = client.generate(model=LOCAL, prompt="Name a colour.", system="You are terse.", options=GREEDY)
    assert whole.response
    _check_final(whole)
    parts = list(
        client.generate(model=LOCAL, prompt="Name a colour.", system="You are terse.", options=GREEDY, stream=True)
    )
    assert "".join(p.response or "" for p in parts) == whole.response
    _check_final(parts[-1])
    # raw: the prompt as it is, no chat template (so fewer prompt tokens than the templated one)
    raw = client.generate(model=LOCAL, prompt="The capital of France is", raw=True, options=GREEDY)
    templated = client.generate(model=LOCAL, prompt="The capital of France is", options=GREEDY)
    assert raw.prompt_eval_count is not None
    assert templated.prompt_eval_count is not None
    assert raw.prompt_eval_count < templated.prompt_eval_count
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model=LOCAL, prompt="x", system="s", raw=True)
    assert caught.value.status_code == 400


def test_options_reach_the_sampler(client: ollama.Client) -> None:
    free = client.chat(
        model=LOCAL,
        messages=[{"role": "user", "content": "Describe the sea."}],
        options={"temperature": 0, "num_predict": 24},
    )
    answer = free.message.content or ""
    words = answer.split()
    assert len(words) > 4
    cut = client.chat(
        model=LOCAL,
        messages=[{"role": "user", "content": "Describe the sea."}],
        options={"temperature": 0, "num_predict": 24, "stop": [words[3]]},
    )
    assert cut.message.content == answer[: answer.index(words[3])]
    short = client.chat(model=LOCAL, messages=HI, options={"temperature": 0, "num_predict": 3})
    assert (short.eval_count, short.done_reason) == (3, "length")
    seeded = [
        client.chat(model=LOCAL, messages=HI, options={"temperature": 1.0, "seed": 7, "num_predict": 8}).message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]  # the same seed draws the same tokens
    # Settings Ollama applies when it loads a model are accepted (the service configures them per model).
    loaded = client.chat(
        model=LOCAL, messages=HI, options={**GREEDY, "num_ctx": 4096, "num_thread": 2, "use_mmap": True}
    )
    assert loaded.message.content == client.chat(model=LOCAL, messages=HI, options=GREEDY).message.content


def test_logprobs(client: ollama.Client) -> None:
    answer = client.chat(model=LOCAL, messages=HI, options=GREEDY, logprobs=True, top_logprobs=2)
    assert answer.logprobs is not None
    assert answer.eval_count is not None
    assert 0 < len(answer.logprobs) <= answer.eval_count  # the end-of-turn token may be counted, not spelled
    assert "".join(t.token for t in answer.logprobs).startswith(answer.message.content or "")
    for entry in answer.logprobs:
        assert entry.logprob <= 0
        assert entry.top_logprobs is not None
        assert len(entry.top_logprobs) == 2
        assert entry.token == entry.top_logprobs[0].token  # greedy: the likeliest token each time


def test_a_forced_tool_call_has_object_arguments(base_url: str, client: ollama.Client) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    body = {
        "model": LOCAL,
        "messages": [question],
        "tools": [WEATHER],
        "tool_choice": FORCE_WEATHER,  # non-standard: Ollama's own clients cannot force a call
        "options": {"temperature": 0, "num_predict": 60},
        "stream": False,
    }
    answered = httpx.post(f"{base_url}/api/chat", json=body, timeout=300)
    assert answered.status_code == 200, answered.text
    called = ollama.ChatResponse.model_validate(answered.json())  # the client's own types read it
    assert called.message.content == ""
    assert called.message.tool_calls is not None
    [call] = called.message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, dict)
    assert isinstance(call.function.arguments["city"], str)
    assert answered.json()["message"]["tool_calls"][0]["function"]["index"] == 0

    lines = _lines(base_url, "/api/chat", {**body, "stream": True})
    calls = [line["message"]["tool_calls"] for line in lines if line["message"].get("tool_calls")]
    assert len(calls) == 1  # the whole call in one object, before the last
    assert calls[0][0]["function"]["name"] == "get_weather"
    assert calls[0][0]["function"]["arguments"] == call.function.arguments
    assert lines[-1]["done"] is True

    # The call and its result go back as Ollama's clients send them: no ids, the result named by its tool.
    result = client.chat(
        model=LOCAL,
        messages=[question, called.message, {"role": "tool", "content": "18 C, sunny", "tool_name": "get_weather"}],
        tools=[WEATHER],
        options={"temperature": 0, "num_predict": 30},
    )
    assert result.message.content or result.message.tool_calls


class Person(BaseModel):
    name: str
    age: int


def test_format_json_schema_and_json(client: ollama.Client) -> None:
    schema = Person.model_json_schema()
    answer = client.chat(
        model=LOCAL,
        messages=[{"role": "user", "content": "Invent a person."}],
        format=schema,
        options={"temperature": 0, "num_predict": 60},
    )
    value = json.loads(answer.message.content or "")
    jsonschema.validate(value, schema)
    Person.model_validate(value)
    streamed = client.generate(
        model=LOCAL,
        prompt="Invent a person.",
        format=schema,
        options={"temperature": 0, "num_predict": 60},
        stream=True,
    )
    jsonschema.validate(json.loads("".join(part.response or "" for part in streamed)), schema)
    anything = client.chat(
        model=LOCAL,
        messages=[{"role": "user", "content": "A colour as JSON."}],
        format="json",
        options={"temperature": 0, "num_predict": 30},
    )
    assert isinstance(json.loads(anything.message.content or ""), dict)


def test_load_requests(client: ollama.Client, base_url: str) -> None:
    loaded = client.chat(model=LOCAL, messages=[])
    assert (loaded.done, loaded.done_reason, loaded.message.content) == (True, "load", "")
    assert client.generate(model=LOCAL).done_reason == "load"
    assert client.embed(model=EMBEDDER, input="").embeddings == []
    assert client.embeddings(model=EMBEDDER, prompt="").embedding == []
    # Generation with a keep_alive in Ollama's forms: the model stays loaded (it was loaded at startup).
    for keep_alive in ("5m", "1h30m", 300, -1):
        assert client.chat(model=LOCAL, messages=HI, options={"num_predict": 2}, keep_alive=keep_alive).done
    # Ollama's unload request: the model leaves memory (/api/ps) and loads again on its next request.
    unload = client.generate(model=LOCAL, keep_alive=0)
    assert (unload.done, unload.done_reason) == (True, "unload")
    assert "smollm2-135m" not in {m.model.removesuffix(":latest") for m in client.ps().models}
    assert client.chat(model=LOCAL, messages=HI, options={"num_predict": 2}).done
    assert "smollm2-135m" in {m.model.removesuffix(":latest") for m in client.ps().models}
    refused = httpx.post(f"{base_url}/api/embed", json={"model": EMBEDDER, "input": "x", "keep_alive": 0})
    assert "keep_alive" in _ollama_error(refused, 400)
    bad = httpx.post(f"{base_url}/api/chat", json={"model": LOCAL, "messages": HI, "keep_alive": "soon"})
    assert "keep_alive" in _ollama_error(bad, 400)


# -- embeddings -----------------------------------------------------------------------------------------
def test_embed_batches_match_v1_embeddings(client: ollama.Client, base_url: str) -> None:
    texts = ["The sky is blue.", "Grass is green.", "Snow is white."]
    embedded = client.embed(model=EMBEDDER, input=texts)
    assert embedded.model == EMBEDDER
    assert len(embedded.embeddings) == 3
    assert all(len(vector) == 384 for vector in embedded.embeddings)
    v1 = httpx.post(f"{base_url}/v1/embeddings", json={"model": EMBEDDER, "input": texts, "encoding_format": "float"})
    assert [item["embedding"] for item in v1.json()["data"]] == [list(v) for v in embedded.embeddings]
    assert embedded.prompt_eval_count == v1.json()["usage"]["prompt_tokens"]
    assert embedded.total_duration is not None
    assert embedded.total_duration > 0
    one = client.embed(model=f"{EMBEDDER}:latest", input=texts[0])
    assert list(one.embeddings[0]) == list(embedded.embeddings[0])
    legacy = client.embeddings(model=EMBEDDER, prompt=texts[0])
    assert list(legacy.embedding) == list(embedded.embeddings[0])

    short = client.embed(model=EMBEDDER, input=texts, dimensions=64)  # the leading 64, normalised again
    for full, cut in zip(embedded.embeddings, short.embeddings, strict=True):
        norm = math.sqrt(math.fsum(x * x for x in full[:64]))
        assert len(cut) == 64
        assert all(math.isclose(c, f / norm, rel_tol=1e-4, abs_tol=1e-6) for c, f in zip(cut, full[:64], strict=True))

    long = "word " * 2000
    assert len(client.embed(model=EMBEDDER, input=long).embeddings[0]) == 384  # cut to fit, the default
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model=EMBEDDER, input=[texts[0], long], truncate=False)
    assert caught.value.status_code == 400
    assert "input[1]" in caught.value.error
    assert len(client.embed(model=EMBEDDER, input=texts, truncate=False).embeddings) == 3


# -- errors in Ollama's shape ---------------------------------------------------------------------------
def _drained(result: Any) -> Any:
    """A streamed answer read to its end (the client raises a stream's error while it is read)."""
    return list(result) if isinstance(result, Iterator) else result


def test_unknown_model_is_ollamas_404(client: ollama.Client, base_url: str) -> None:
    expected = 'model "nowhere" not found, try pulling it first'
    calls = [
        lambda: client.chat(model="nowhere", messages=HI),
        lambda: client.chat(model="nowhere", messages=HI, stream=True),
        lambda: client.generate(model="nowhere", prompt="x"),
        lambda: client.embed(model="nowhere", input="x"),
        lambda: client.embeddings(model="nowhere", prompt="x"),
        lambda: client.show("nowhere"),
    ]
    for call in calls:
        with pytest.raises(ollama.ResponseError) as caught:
            _drained(call())
        assert (caught.value.status_code, caught.value.error) == (404, expected)
    response = httpx.post(f"{base_url}/api/chat", json={"model": "nowhere", "messages": HI})
    assert _ollama_error(response, 404) == expected
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"options": {"temperature": "hot"}}, "options.temperature"),
        ({"options": {"top_p": 3}}, "options.top_p"),
        ({"options": {"mirostat": 2}}, "Mirostat"),
        ({"options": {"stop": "\n", "repeat_last_n": 8}}, "options.repeat_last_n"),
        ({"think": True}, "does not support thinking"),
        ({"format": "yaml"}, "format"),
        ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, "images"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": "hello"}, "messages"),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0]"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
        ({"model": ""}, "model is required"),
        ({"model": EMBEDDER}, "does not support chat"),
    ],
)
def test_bad_chat_requests_are_400(base_url: str, body: dict[str, Any], says: str) -> None:
    response = httpx.post(f"{base_url}/api/chat", json={"model": LOCAL, "messages": HI, "stream": False, **body})
    assert says in _ollama_error(response, 400)


def test_bad_requests_through_the_client(client: ollama.Client, base_url: str) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=LOCAL, messages=HI, options={"temperature": "hot"})
    assert caught.value.status_code == 400
    assert "options.temperature" in caught.value.error
    for refused in ({"suffix": "return x"}, {"template": "{{ .Prompt }}"}, {"context": [1, 2]}, {"images": ["aGk="]}):
        answer = httpx.post(
            f"{base_url}/api/generate", json={"model": LOCAL, "prompt": "x", "stream": False, **refused}
        )
        assert next(iter(refused)) in _ollama_error(answer, 400)
    with pytest.raises(ollama.ResponseError) as embedding:
        client.embed(model=LOCAL, input="x")
    assert (embedding.value.status_code, embedding.value.error) == (400, '"smollm2" does not support embeddings')
    assert "JSON" in _ollama_error(httpx.post(f"{base_url}/api/chat", content=b"{not json"), 400)
    assert _ollama_error(httpx.get(f"{base_url}/api/nothing-here"), 404)  # not a path of Ollama's: its shape still


# -- remote models, auth and usage ----------------------------------------------------------------------
class Deployment:
    """A service with auth on, serving a model on the fake OpenAI-compatible upstream (`remote`), a Claude
    deployment on the fake Anthropic API (`claude`) and the shipped embedding model."""

    def __init__(self, folder: Path) -> None:
        self.openai = FakeOpenAI().start()
        self.anthropic = FakeAnthropic(api_key="test-key", model_ids=("claude-test",)).start()
        (folder / "providers.yaml").write_text(
            f"""
providers:
  fake: {{type: openai, base_url: "{self.openai.url}", timeout: 5}}
  claude-api: {{type: anthropic, base_url: "{self.anthropic.url}", api_key: test-key, timeout: 10}}
  local-embeddings: {{type: sentence_transformers}}
"""
        )
        (folder / "models.yaml").write_text(
            "models:\n  remote: {provider: fake, model: ok}\n  claude: {provider: claude-api, model: claude-test}\n"
        )
        (folder / "embeddings.yaml").write_text(Path("config/embeddings.yaml").read_text())
        database = f"sqlite+aiosqlite:///{folder / 'ollama.db'}"
        self.live = LiveServer(
            make_settings(
                CONFIG_DIR=str(folder),
                DATABASE_URL=database,
                AUTH_ENABLED=True,
                API_KEY_CACHE_SECONDS=0,
                LLM_DEFAULT_MODEL="remote",
                LLM_RETRIES=0,
            )
        ).start()
        created = subprocess.run(
            [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "ollama user", "--scope", "user"],
            env={**os.environ, "DATABASE_URL": database, "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            check=True,
        )
        self.key = created.stdout.strip().splitlines()[-1]
        self.url = self.live.url

    def client(self) -> ollama.Client:
        return ollama.Client(host=self.url, headers={"Authorization": f"Bearer {self.key}"})

    def usage(self) -> dict[str, dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/usage", headers={"Authorization": f"Bearer {self.key}"})
        assert answer.status_code == 200, answer.text
        return {row["model"]: row for row in answer.json()["data"]}

    def close(self) -> None:
        self.live.stop()
        self.openai.stop()
        self.anthropic.stop()


@pytest.fixture(scope="module")
def secured() -> Iterator[Deployment]:
    running = Deployment(Path(tempfile.mkdtemp(prefix="sop-llm-ollama-")))
    yield running
    running.close()


def test_no_key_is_401_in_ollamas_shape(secured: Deployment) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=secured.url).list()
    assert caught.value.status_code == 401
    assert caught.value.error
    missing = httpx.post(f"{secured.url}/api/chat", json={"model": "remote", "messages": HI})
    _ollama_error(missing, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = ollama.Client(host=secured.url, headers={"Authorization": "Bearer sop_not-a-key"})
    with pytest.raises(ollama.ResponseError) as refused:
        wrong.chat(model="remote", messages=HI)
    assert refused.value.status_code == 401
    assert httpx.get(f"{secured.url}/api/version").status_code == 200  # probing the server needs no key


def test_a_user_key_chats_with_a_remote_model_and_its_tokens_are_counted(secured: Deployment) -> None:
    client = secured.client()
    listed = {m.model: m for m in client.list().models}
    assert listed["remote:latest"].size == 0  # nothing on disk here
    assert "remote:latest" not in {m.model for m in client.ps().models}
    whole = client.chat(model="remote", messages=HI)
    assert whole.message.content == "part1 part2 "  # the fake upstream's streamed answer
    assert (whole.prompt_eval_count, whole.eval_count, whole.done_reason) == (5, 3, "stop")
    parts = list(client.chat(model="remote:latest", messages=HI, stream=True))
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    embedded = client.embed(model=EMBEDDER, input=["count me", "and me"])
    rows = secured.usage()
    assert rows["remote"]["requests"] == 2
    assert (rows["remote"]["prompt_tokens"], rows["remote"]["completion_tokens"]) == (10, 6)
    assert rows[EMBEDDER]["prompt_tokens"] == embedded.prompt_eval_count


def test_tool_calls_round_trip_through_a_claude_deployment(secured: Deployment) -> None:
    client = secured.client()
    secured.anthropic.plan(tool_use("get_weather", {"city": "Paris"}, call_id="toolu_42"))
    question = {"role": "user", "content": "Weather in Paris?"}
    called = client.chat(model="claude", messages=[question], tools=[WEATHER])
    assert called.message.tool_calls is not None
    [call] = called.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", {"city": "Paris"})
    # Sent back as the client keeps them (no ids): the fake Claude refuses a tool_result that answers no tool_use.
    secured.anthropic.plan(text("18 C and sunny."))
    history = [question, called.message, {"role": "tool", "content": "18 C, sunny", "tool_name": "get_weather"}]
    answered = client.chat(model="claude", messages=history, tools=[WEATHER])
    assert answered.message.content == "18 C and sunny."
    sent = secured.anthropic.messages()[-1]["messages"]
    use = next(block for block in sent[1]["content"] if block["type"] == "tool_use")
    result = next(block for block in sent[2]["content"] if block["type"] == "tool_result")
    assert result["tool_use_id"] == use["id"]
    assert use["input"] == {"city": "Paris"}

    secured.anthropic.plan(tool_use("get_weather", {"city": "Oslo"}))
    parts = list(client.chat(model="claude", messages=[question], tools=[WEATHER], stream=True))
    streamed = [c for p in parts for c in p.message.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in streamed] == [("get_weather", {"city": "Oslo"})]

"""The official `openai` SDK, with its default settings, against the live server."""

from __future__ import annotations

import numpy as np
import openai
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.api]


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-checked")


@pytest.fixture
def aclient(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="not-checked")


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o-mini",  # an alias of the embedded SmolLM2
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.object == "chat.completion"
    assert reply.model == "smollm2-135m"
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_finish_reason_length_when_capped(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=5,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5


def test_chat_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Name three fruits."}]
    whole = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=30, temperature=0)
    stream = client.chat.completions.create(
        model="smollm2",
        messages=messages,
        max_tokens=30,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=8, temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].text.strip().startswith("5")
    assert reply.choices[0].finish_reason == "length"


def test_embeddings_default_encoding_is_base64_and_decodes(client: openai.OpenAI) -> None:
    # The SDK asks for base64 unless told otherwise and decodes little-endian float32.
    reply = client.embeddings.create(model="text-embedding-3-small", input=["a cat", "a kitten", "a truck"])
    vectors = np.array([d.embedding for d in reply.data])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    floats = client.embeddings.create(model="all-minilm-l6-v2", input="a cat", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, vectors[0], atol=1e-6)
    assert reply.usage.prompt_tokens > 0


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"smollm2-135m", "gpt-4o-mini", "all-minilm-l6-v2", "text-embedding-3-small"} <= ids
    assert client.models.retrieve("smollm2-135m").id == "smollm2-135m"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-5-ultra", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"


async def test_async_client_chat_stream_and_embeddings(aclient: openai.AsyncOpenAI) -> None:
    reply = await aclient.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi!"}], max_tokens=10, temperature=0
    )
    assert reply.choices[0].message.content
    stream = await aclient.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi!"}], max_tokens=10, temperature=0, stream=True
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream]
    assert "".join(pieces) == reply.choices[0].message.content
    emb = await aclient.embeddings.create(model="text-embedding-ada-002", input="hello")
    assert len(emb.data[0].embedding) == 384
    models = await aclient.models.list()
    assert any(m.id == "smollm2-135m" for m in models.data)
    await aclient.close()


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Invent a person. Answer in JSON."}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    import json

    obj = json.loads(reply.choices[0].message.content or "")
    assert set(obj) == {"name", "age"}
    assert isinstance(obj["age"], int)

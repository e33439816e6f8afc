"""Structured output through the live service with the embedded SmolLM2 as generator and fixer."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from bench.json_prompts import PROMPTS
from pydantic import BaseModel

pytestmark = [pytest.mark.integration, pytest.mark.api]

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
IMPOSSIBLE = {  # no value satisfies it: every path must end in a 422 carrying the attempts
    "type": "object",
    "properties": {"x": {"type": "integer", "minimum": 5, "maximum": 1}},
    "required": ["x"],
}


class Person(BaseModel):
    name: str
    age: int


def _chat(base_url: str, content: str, response_format: dict, **extra: object) -> httpx.Response:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": content}],
        "response_format": response_format,
        "max_tokens": 200,
        "temperature": 0,
        **extra,
    }
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)


@pytest.mark.slow
def test_thirty_prompts_give_valid_json_or_422_never_invalid_json(base_url: str) -> None:
    assert len(PROMPTS) == 30
    ok = 0
    for prompt, schema in PROMPTS:
        response = _chat(base_url, prompt, {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
        if response.status_code == 200:
            reply = response.json()
            value = json.loads(reply["choices"][0]["message"]["content"])
            jsonschema.validate(value, schema)  # never invalid JSON with 200
            assert reply["sop_json"]["provenance"] in ("parsed", "repaired_locally") or reply["sop_json"][
                "provenance"
            ].startswith("fixed_by:")
            ok += 1
        else:
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "json_fix_failed"
            assert error["attempts"][0]["stage"] == "generation"
    print(f"\nstructured output: {ok}/30 answered with schema-valid JSON (200)")


def test_sdk_parse_with_a_pydantic_model(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x")
    reply = client.chat.completions.parse(
        model="smollm2",
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format=Person,
        max_tokens=200,
        temperature=0,
    )
    person = reply.choices[0].message.parsed
    assert isinstance(person, Person)
    assert person.name
    assert reply.model_extra is not None
    assert reply.model_extra["sop_json"] == {"provenance": "parsed", "attempts": 1, "constraint": "schema"}


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {"type": "json_object", "schema": PERSON},  # the non-standard form instructor and llama.cpp users send
        {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}},
    ],
    ids=["json_object", "json_object+schema", "json_schema"],
)
def test_response_formats(base_url: str, response_format: dict) -> None:
    response = _chat(base_url, "Invent a person with a name and an age.", response_format, max_tokens=80)
    assert response.status_code == 200, response.text
    value = json.loads(response.json()["choices"][0]["message"]["content"])
    if "schema" in response_format or "json_schema" in response_format:
        jsonschema.validate(value, PERSON)
    assert response.json()["sop_json"]["attempts"] >= 1


def test_completions_and_native_generate(base_url: str) -> None:
    body = {"model": "smollm2", "prompt": "A person as JSON:", "max_tokens": 60, "temperature": 0}
    body["response_format"] = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    reply = httpx.post(f"{base_url}/v1/completions", json=body, timeout=120).json()
    jsonschema.validate(json.loads(reply["choices"][0]["text"]), PERSON)
    assert reply["sop_json"]["constraint"] == "schema"
    native = httpx.post(
        f"{base_url}/api/v1/models/generate",
        json={"prompt": "A person as JSON:", "json_schema": PERSON, "max_tokens": 60, "temperature": 0},
        timeout=120,
    ).json()
    jsonschema.validate(native["json"]["value"], PERSON)
    assert json.loads(native["text"]) == native["json"]["value"]
    assert native["json"]["provenance"] in ("parsed", "repaired_locally")


def test_stream_carries_the_verdict_on_its_last_chunk(base_url: str) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Invent a person."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
        "max_tokens": 80,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=120) as response:
        events = response.read().decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    verdict = chunks[-1]["sop_json"]
    assert verdict["constraint"] == "schema"
    text = verdict.get("text") or "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    jsonschema.validate(json.loads(text), PERSON)
    assert all("sop_json" not in c for c in chunks[:-1])


def test_stream_that_cannot_be_mended_ends_with_json_fix_failed(base_url: str) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Give x."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": IMPOSSIBLE}},
        "max_tokens": 20,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=120) as response:
        events = response.read().decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["code"] == "json_fix_failed"


def test_impossible_schema_is_a_422_with_every_attempt(base_url: str) -> None:
    response = _chat(base_url, "Give x.", {"type": "json_schema", "json_schema": {"name": "x", "schema": IMPOSSIBLE}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "json_fix_failed"
    assert [a["stage"] for a in error["attempts"]] == ["generation", "fixer", "fixer"]
    native = httpx.post(f"{base_url}/api/v1/json/fix", json={"text": '{"x": 3}', "schema": IMPOSSIBLE}, timeout=120)
    assert native.status_code == 422
    attempts = native.json()["error"]["details"]["attempts"]
    assert [a["stage"] for a in attempts] == ["input", "fixer", "fixer"]  # JSON_FIXER_MAX_ATTEMPTS=2
    assert all(a["errors"] for a in attempts)


def test_json_fix_endpoint(base_url: str) -> None:
    local = httpx.post(
        f"{base_url}/api/v1/json/fix",
        json={"text": "Sure:\n```json\n{'name': 'Bob', 'age': '42',}\n```", "schema": PERSON},
    ).json()
    assert local["value"] == {"name": "Bob", "age": 42}
    assert local["provenance"] == "repaired_locally"
    assert local["attempts"] == 1
    fixed = httpx.post(
        f"{base_url}/api/v1/json/fix", json={"text": '{"name": "Bob"}', "schema": PERSON}, timeout=120
    ).json()
    jsonschema.validate(fixed["value"], PERSON)
    assert fixed["provenance"] == "fixed_by:smollm2-135m"
    assert fixed["attempts"] == 2
    bad_schema = httpx.post(f"{base_url}/api/v1/json/fix", json={"text": "{}", "schema": {"type": "wobbly"}})
    assert bad_schema.status_code == 400
    assert "schema is invalid" in bad_schema.json()["error"]["message"]
    stats = httpx.get(f"{base_url}/api/v1/json/stats").json()
    assert stats["repaired_locally"] >= 1
    assert stats["fixed_by_model"] >= 1

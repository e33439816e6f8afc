"""SSE framing on both surfaces, read as raw bytes."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.api]


def _events(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\n\n")
    return raw[:-2].split(b"\n\n")


def _stream(base_url: str, path: str, body: dict) -> tuple[httpx.Response, bytes]:
    with httpx.stream("POST", f"{base_url}{path}", json=body, timeout=60) as response:
        raw = response.read()
    return response, raw


def test_chat_stream_framing_without_usage(base_url: str) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "stream": True}
    response, raw = _stream(base_url, "/v1/chat/completions", body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(raw)
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert all(e.startswith(b"data: ") for e in events)
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("usage" not in c for c in chunks)  # never sent unasked
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_chat_stream_usage_chunk_when_asked(base_url: str) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, raw = _stream(base_url, "/v1/chat/completions", body)
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in _events(raw)[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 6


def test_completions_stream(base_url: str) -> None:
    body = {"model": "smollm2", "prompt": "1, 2, 3,", "max_tokens": 6, "stream": True, "temperature": 0}
    _, raw = _stream(base_url, "/v1/completions", body)
    events = _events(raw)
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks).strip().startswith("4")


def test_native_stream_events(base_url: str) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": True}
    response, raw = _stream(base_url, "/api/v1/models/generate", body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(raw)
    names = [e.split(b"\n", 1)[0] for e in events]
    assert names[-1] == b"event: done"
    assert set(names[:-1]) == {b"event: token"}
    done = json.loads(events[-1].split(b"\n", 1)[1].removeprefix(b"data: "))
    assert done["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 5


def test_stream_error_before_first_token_is_an_http_error(base_url: str) -> None:
    body = {"model": "missing", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    response, raw = _stream(base_url, "/v1/chat/completions", body)
    assert response.status_code == 404
    assert json.loads(raw)["error"]["code"] == "model_not_found"

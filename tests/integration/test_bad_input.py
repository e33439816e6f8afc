"""Bad input gets a clear 4xx in the documented error shape on both surfaces, never a 500."""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.api]

CHAT = "/v1/chat/completions"
GEN = "/api/v1/models/generate"
MSG = [{"role": "user", "content": "hi"}]

# (path, body: bytes or JSON, status, error code, param in the message)
CASES = [
    (CHAT, b'{"model": "smollm2", "messages": [', 400, "invalid_request", "valid JSON"),
    (CHAT, b"not json at all", 400, "invalid_request", "valid JSON"),
    (CHAT, {"model": "smollm2"}, 400, "validation_error", "messages"),
    (CHAT, {"messages": MSG}, 400, "validation_error", "model"),
    (CHAT, {"model": "smollm2", "messages": "hi"}, 400, "validation_error", "messages"),
    (CHAT, {"model": "smollm2", "messages": MSG, "max_tokens": "many"}, 400, "validation_error", "max_tokens"),
    (CHAT, {"model": "smollm2", "messages": MSG, "temperature": 7}, 400, "validation_error", "temperature"),
    (CHAT, {"model": "smollm2", "messages": [{"role": "wizard", "content": "x"}]}, 400, "validation_error", "role"),
    (CHAT, {"model": "smollm2", "messages": MSG, "n": 17}, 400, "validation_error", "less than or equal to 16"),
    (CHAT, {"model": "smollm2", "messages": MSG, "logit_bias": {"x": 1}}, 400, "invalid_request", "token ids"),
    (CHAT, {"model": "nope", "messages": MSG}, 404, "model_not_found", "nope"),
    (CHAT, {"model": "smollm2", "messages": [{"role": "user", "content": "x" * 9000}]}, 400, "prompt_too_long", "8000"),
    (
        CHAT,
        {"model": "smollm2", "messages": [{"role": "user", "content": "12345 " * 1300}]},
        400,
        "context_length_exceeded",
        "context",
    ),
    (
        CHAT,
        {"model": "smollm2", "messages": MSG, "tools": [{"type": "function", "function": {}}]},
        400,
        "invalid_request",
        "tools[0] must be",
    ),
    (
        CHAT,
        {
            "model": "smollm2",
            "messages": MSG,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        400,
        "invalid_request",
        "'g'",
    ),
    (GEN, {"prompt": "hi", "fallbacks": ["a", "b", "c", "d", "e", "f"]}, 400, "invalid_request", "at most 5"),
    (
        CHAT,
        {"model": "smollm2", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "unsupported_feature",
        "image_url",
    ),
    (
        CHAT,
        {"model": "smollm2", "messages": MSG, "response_format": {"type": "json_schema"}},
        400,
        "invalid_request",
        "schema",
    ),
    ("/v1/completions", {"model": "smollm2", "prompt": [[1, 2, 3]]}, 400, "invalid_request", "token arrays"),
    ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": [101, 2023]}, 400, "invalid_request", "token ids"),
    ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": []}, 400, "invalid_request", "empty"),
    ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": ["ok", ""]}, 400, "invalid_request", "empty"),
    ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "model_not_found", "nope"),
    ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "x", "dimensions": 64}, 400, "invalid_request", "384"),
    (GEN, b"{", 400, "invalid_request", "valid JSON"),
    (GEN, {}, 422, "validation_error", "prompt"),
    (GEN, {"prompt": "hi", "messages": MSG}, 422, "validation_error", "exactly one"),
    (GEN, {"prompt": "hi", "max_tokens": 0}, 422, "validation_error", "max_tokens"),
    (GEN, {"prompt": "hi", "model": "nope"}, 404, "model_not_found", "nope"),
    (GEN, {"prompt": "x" * 9000}, 400, "prompt_too_long", "LLM_MAX_PROMPT_CHARS"),
    (GEN, {"prompt": "hi", "surprise": 1}, 422, "validation_error", "surprise"),
    ("/api/v1/embeddings", {"texts": []}, 422, "validation_error", "texts"),
    ("/api/v1/embeddings", {"texts": ["a"], "model": "nope"}, 404, "model_not_found", "nope"),
    ("/api/v1/similarity", {"text1": "a"}, 422, "validation_error", "text2"),
    ("/api/v1/similarity", {"query": "a", "candidates": []}, 400, "invalid_request", "candidates"),
    ("/api/v1/models/nope/load", {}, 404, "model_not_found", "nope"),
]


@pytest.mark.parametrize(("path", "body", "status", "code", "mentions"), CASES)
def test_bad_input_is_a_clear_4xx(
    base_url: str, path: str, body: object, status: int, code: str, mentions: str
) -> None:
    if isinstance(body, bytes):
        response = httpx.post(base_url + path, content=body, headers={"content-type": "application/json"})
    else:
        response = httpx.post(base_url + path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert mentions in error["message"]
    if path.startswith("/v1/"):
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] in ("invalid_request_error",)
        # OpenAI surface: parameter problems are 400 invalid_request_error with a code
        assert error["code"] in (code, "invalid_request")
        assert response.headers["x-should-retry"] == "false"
    else:
        assert set(error) == {"code", "message", "trace_id", "details"}
        assert error["code"] == code
        assert error["trace_id"] == response.headers["x-request-id"]


def test_unknown_route_and_method(base_url: str) -> None:
    assert httpx.get(f"{base_url}/v1/nothing-here").json()["error"]["code"] == "not_found"
    response = httpx.get(f"{base_url}/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_extra_openai_fields_are_tolerated(base_url: str) -> None:
    body = {
        "model": "smollm2",
        "messages": MSG,
        "max_tokens": 3,
        "user": "u1",
        "top_k": 5,
        "parallel_tool_calls": False,
        "logprobs": False,
        "frequency_penalty": 0,
        "metadata": {"a": "b"},
    }
    assert httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60).status_code == 200


def test_trace_id_is_taken_from_the_caller(base_url: str) -> None:
    response = httpx.post(f"{base_url}/api/v1/models/generate", json={}, headers={"X-Request-ID": "req-abc.123"})
    assert response.headers["x-request-id"] == "req-abc.123"
    assert response.json()["error"]["trace_id"] == "req-abc.123"
    traced = httpx.get(
        f"{base_url}/api/v1/health",
        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    assert traced.headers["x-request-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"

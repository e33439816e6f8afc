"""Input limits: the body cap is enforced while the body arrives, with or without Content-Length; message
count, prompt length and max_tokens are bounded; no request field can point a provider at another URL; CORS comes
from settings."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

BODY_CAP = 64 * 1024


@pytest.fixture(scope="module")
def limited() -> Iterator[LiveServer]:
    live = LiveServer(
        make_settings(
            MAX_REQUEST_BODY_BYTES=BODY_CAP,
            LLM_MAX_MESSAGES=4,
            LLM_MAX_TOKENS_PER_REQUEST=5,
            LLM_MAX_PROMPT_CHARS=1000,
            CORS_ORIGINS=["https://app.example"],
        )
    ).start()
    yield live
    live.stop()


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"x" * piece


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/api/v1/embeddings", "/api/v1/tasks"])
def test_declared_oversized_body_is_413_before_parsing(limited: LiveServer, path: str) -> None:
    # Not JSON at all: had it been parsed, the answer would be 400/422.
    response = httpx.post(f"{limited.url}{path}", content=b"x" * (BODY_CAP + 1))
    assert response.status_code == 413, response.text
    assert str(BODY_CAP) in response.text
    assert response.headers["x-request-id"]


def test_chunked_oversized_body_is_413_while_streaming(limited: LiveServer) -> None:
    # A generator body goes out with Transfer-Encoding: chunked and no Content-Length.
    for path, shape in [("/v1/chat/completions", "message"), ("/api/v1/models/generate", "code")]:
        response = httpx.post(f"{limited.url}{path}", content=_chunks(BODY_CAP * 4))
        assert response.status_code == 413, response.text
        assert "Content-Length" not in response.request.headers
        assert shape in response.json()["error"]


def test_a_body_under_the_cap_is_parsed(limited: LiveServer) -> None:
    response = httpx.post(f"{limited.url}/v1/chat/completions", content=b"x" * (BODY_CAP - 10))
    assert response.status_code == 400  # malformed JSON, not too large
    chunked = httpx.post(f"{limited.url}/v1/chat/completions", content=_chunks(BODY_CAP - 10))
    assert chunked.status_code == 400


def test_message_count_is_capped(limited: LiveServer) -> None:
    messages = [{"role": "user", "content": "hi"}] * 5
    response = httpx.post(f"{limited.url}/v1/chat/completions", json={"model": "smollm2-135m", "messages": messages})
    assert response.status_code == 400
    assert "LLM_MAX_MESSAGES" in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "messages"


def test_prompt_length_is_capped(limited: LiveServer) -> None:
    response = httpx.post(f"{limited.url}/api/v1/models/generate", json={"prompt": "a" * 1001})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "prompt_too_long"


def test_max_tokens_is_clamped_to_the_setting(limited: LiveServer) -> None:
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Count to 100"}], "max_tokens": 10**6}
    response = httpx.post(f"{limited.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 5


def test_no_request_field_redirects_a_provider(limited: LiveServer) -> None:
    redirect = {"base_url": "http://127.0.0.1:9/", "api_base": "http://127.0.0.1:9/", "api_key": "sk-evil"}
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **redirect}
    response = httpx.post(f"{limited.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200  # OpenAI surface: unknown fields ignored, served by the configured model
    assert response.json()["model"] == "smollm2-135m"
    native = httpx.post(f"{limited.url}/api/v1/models/generate", json={"prompt": "hi", **redirect})
    assert native.status_code == 422  # native surface: unknown fields refused
    assert "base_url" in native.text
    fallback = httpx.post(
        f"{limited.url}/api/v1/models/generate", json={"prompt": "hi", "fallbacks": ["http://127.0.0.1:9/v1"]}
    )
    assert fallback.status_code == 404  # fallbacks name configured models, never URLs


def test_cors_allows_only_configured_origins(limited: LiveServer) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = httpx.options(f"{limited.url}/v1/models", headers={"Origin": "https://app.example", **preflight})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = httpx.options(f"{limited.url}/v1/models", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in refused.headers
    simple = httpx.get(f"{limited.url}/v1/models", headers={"Origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example"

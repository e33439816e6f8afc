"""A prompt that does not fit the model's context with the max_tokens the caller asked for is a 400 that says by
how much, on every API (OpenAI chat and completions, Anthropic messages, native); a request that sets no
max_tokens gets what the context leaves. The shipped model has a context of 2,048 tokens."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.api]

MODEL = "smollm2-135m"
CONTEXT = 2048
CHAT = [{"role": "user", "content": "Name a colour."}]


def _over(message: str) -> int:
    found = re.search(r"(\d+) over", message)
    assert found is not None, message
    return int(found.group(1))


def test_max_tokens_beyond_the_context_is_refused_with_the_overflow(base_url: str) -> None:
    prompt_tokens = httpx.post(f"{base_url}/tokenize", json={"model": MODEL, "messages": CHAT}).json()["count"]
    refused = httpx.post(
        f"{base_url}/v1/chat/completions", json={"model": MODEL, "messages": CHAT, "max_tokens": CONTEXT}
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "max_tokens")
    assert _over(error["message"]) == prompt_tokens
    assert f"lower max_tokens to {CONTEXT - prompt_tokens}" in error["message"]
    fits = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": CHAT, "max_tokens": CONTEXT - prompt_tokens, "temperature": 0},
        timeout=300,
    )
    assert fits.status_code == 200, fits.text

    completions = httpx.post(
        f"{base_url}/v1/completions", json={"model": MODEL, "prompt": "1, 2,", "max_tokens": CONTEXT}
    )
    assert completions.status_code == 400 and completions.json()["error"]["code"] == "context_length_exceeded"
    anthropic = httpx.post(f"{base_url}/v1/messages", json={"model": MODEL, "messages": CHAT, "max_tokens": CONTEXT})
    assert anthropic.status_code == 400, anthropic.text
    assert "over" in anthropic.json()["error"]["message"]
    native = httpx.post(f"{base_url}/api/v1/models/generate", json={"messages": CHAT, "max_tokens": CONTEXT})
    assert native.status_code == 400 and native.json()["error"]["code"] == "context_length_exceeded"


def test_without_max_tokens_the_answer_may_use_what_the_context_leaves(base_url: str) -> None:
    answer = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": CHAT, "temperature": 0},  # the default is LLM_MAX_TOKENS_PER_REQUEST
        timeout=300,
    )
    assert answer.status_code == 200, answer.text

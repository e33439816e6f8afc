"""POST /tokenize and /detokenize (and under /api/v1) on the live server's SmolLM2."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"
PROMPT = "The quick brown fox jumps over the lazy dog. Ünïcödé, 数字 123!"
CHAT = [{"role": "user", "content": "Describe the sea in one sentence."}]


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_a_prompt_round_trips_and_counts_what_a_completion_reads(base_url: str, prefix: str) -> None:
    tokenized = httpx.post(f"{base_url}{prefix}/tokenize", json={"model": MODEL, "prompt": PROMPT}).json()
    assert tokenized["model"] == MODEL
    assert tokenized["count"] == len(tokenized["tokens"]) > 10
    assert tokenized["max_model_len"] == 2048
    completion = httpx.post(
        f"{base_url}/v1/completions", json={"model": MODEL, "prompt": PROMPT, "max_tokens": 1}, timeout=60
    ).json()
    assert completion["usage"]["prompt_tokens"] == tokenized["count"]
    back = httpx.post(f"{base_url}{prefix}/detokenize", json={"model": MODEL, "tokens": tokenized["tokens"]}).json()
    assert back == {"model": MODEL, "prompt": PROMPT}


def test_messages_are_rendered_by_the_chat_template(base_url: str) -> None:
    tokenized = httpx.post(f"{base_url}/tokenize", json={"model": "smollm2", "messages": CHAT}).json()
    chat = httpx.post(
        f"{base_url}/v1/chat/completions", json={"model": MODEL, "messages": CHAT, "max_tokens": 1}, timeout=60
    ).json()
    assert tokenized["count"] == chat["usage"]["prompt_tokens"]
    text = httpx.post(f"{base_url}/detokenize", json={"tokens": tokenized["tokens"]}).json()["prompt"]
    assert "<|im_start|>user\nDescribe the sea in one sentence.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_without_special_tokens_markup_is_plain_text(base_url: str) -> None:
    body = {"model": MODEL, "prompt": "<|im_start|>hi"}
    special = httpx.post(f"{base_url}/tokenize", json=body).json()["tokens"]
    plain = httpx.post(f"{base_url}/tokenize", json={**body, "add_special_tokens": False}).json()["tokens"]
    assert len(plain) > len(special)  # the marker is one token as markup, several as text


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/tokenize", {"model": MODEL}, 422, "exactly one of prompt and messages"),
        ("/tokenize", {"model": MODEL, "prompt": "a", "messages": CHAT}, 422, "exactly one of prompt and messages"),
        ("/tokenize", {"model": "no-such-model", "prompt": "a"}, 404, "does not exist"),
        ("/detokenize", {"model": MODEL, "tokens": [1, 99999999]}, 400, "tokens[1] = 99999999 is not a token"),
        ("/detokenize", {"model": MODEL, "tokens": "abc"}, 422, "tokens: Input should be a valid list"),
        ("/api/v1/detokenize", {"model": MODEL, "tokens": [-1]}, 400, "tokens[0] = -1 is not a token"),
    ],
)
def test_bad_input_is_a_clear_4xx(base_url: str, path: str, body: dict[str, object], status: int, says: str) -> None:
    response = httpx.post(f"{base_url}{path}", json=body)
    assert response.status_code == status, response.text
    assert says in response.text

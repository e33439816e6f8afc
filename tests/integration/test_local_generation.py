"""LocalModels behaviour through the live server: cancellation on disconnect, the concurrency bound, the
memory guard. Evidence comes from the per-model counters in GET /api/v1/models, not from timing."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import MAX_QUEUED
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

MODEL = "smollm2-135m"
# A counting prompt keeps SmolLM2 going until max_tokens: it never emits end-of-sequence early.
COUNTING = {"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 1500, "temperature": 0}


def _wait_idle(server: LiveServer) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = server.model_stats(MODEL)
        if stats["active"] == 0 and stats["waiting"] == 0 and stats["running_sequences"] == 0:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"model never became idle: {stats}")


async def test_disconnect_mid_stream_stops_generation(server: LiveServer) -> None:
    before = _wait_idle(server)
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("POST", f"{server.url}/v1/completions", json={**COUNTING, "stream": True}) as response,
    ):
        assert response.status_code == 200
        received = 0
        async for line in response.aiter_lines():
            received += line.startswith("data: ")
            if received == 5:
                break  # leaving the block closes the connection mid-stream
    after = _wait_idle(server)
    generated = after["tokens_generated"] - before["tokens_generated"]
    assert after["cancelled"] == before["cancelled"] + 1
    assert 5 <= generated < 300, generated  # 1500 were asked for; the loop stopped soon after the disconnect
    assert server.model_stats(MODEL)["tokens_generated"] == after["tokens_generated"]  # and stays stopped


async def test_disconnect_during_non_streaming_request_stops_generation(server: LiveServer) -> None:
    before = _wait_idle(server)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=1.0)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{server.url}/v1/completions", json=COUNTING)
    after = _wait_idle(server)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < 1000


async def test_concurrent_requests_all_complete_correctly_within_the_bound(server: LiveServer) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Describe the sea."}], "max_tokens": 40}
    body["temperature"] = 0
    slots = _wait_idle(server)["slots"]
    async with httpx.AsyncClient(timeout=120) as client:
        replies = await asyncio.gather(
            *(client.post(f"{server.url}/v1/chat/completions", json=body) for _ in range(slots + MAX_QUEUED))
        )
    assert [r.status_code for r in replies] == [200] * len(replies), [r.text for r in replies if r.status_code != 200]
    texts = {r.json()["choices"][0]["message"]["content"] for r in replies}
    assert len(texts) == 1  # greedy decoding: every request got the same, complete answer, nothing cut off
    assert all(r.json()["usage"]["completion_tokens"] > 0 for r in replies)
    assert server.model_stats(MODEL)["peak_running_sequences"] == slots


async def test_temperature_zero_answers_do_not_depend_on_what_ran_before(server: LiveServer) -> None:
    """The same greedy request, asked alone and after requests that share a prefix with it (the case in which
    llama-cpp-python would reuse the previous prompt's KV cache and evaluate only the rest), answers the same."""
    question = {"model": MODEL, "max_tokens": 24, "temperature": 0}
    system = {"role": "system", "content": "You are a concise assistant who answers in one sentence."}

    async def ask(client: httpx.AsyncClient, content: str) -> str:
        body = {**question, "messages": [system, {"role": "user", "content": content}]}
        reply = await client.post(f"{server.url}/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["choices"][0]["message"]["content"])

    async with httpx.AsyncClient(timeout=120) as client:
        alone = await ask(client, "What colour is the sky?")
        for before in ("What colour is grass?", "What colour is the sea?", "What colour is the sky at night?"):
            await ask(client, before)
            assert await ask(client, "What colour is the sky?") == alone
            assert await ask(client, "What colour is the sky?") == alone  # a full-prompt match, too


async def test_requests_beyond_the_wait_queue_get_429_with_retry_after(server: LiveServer) -> None:
    """Every slot busy and every queue place taken (seen in the model's counters, not assumed from timing): the
    next requests are refused at once. Counting to 1500 keeps the held requests going for the whole check, however
    fast or slow the machine; they are cancelled after it."""
    slots = _wait_idle(server)["slots"]
    url = f"{server.url}/v1/completions"
    async with httpx.AsyncClient(timeout=120) as client:
        held = [asyncio.create_task(client.post(url, json=COUNTING)) for _ in range(slots + MAX_QUEUED)]
        try:
            deadline = time.monotonic() + 60
            while True:
                models = (await client.get(f"{server.url}/api/v1/models")).json()["models"]
                stats = next(m for m in models if m["name"] == MODEL)["stats"]
                if stats["running_sequences"] == slots and stats["active"] == slots + MAX_QUEUED:
                    break
                assert time.monotonic() < deadline, f"the slots and the queue never filled: {stats}"
                await asyncio.sleep(0.02)
            rejected = await asyncio.gather(*(client.post(url, json=COUNTING) for _ in range(3)))
            assert not any(task.done() for task in held)  # still generating: the queue was full throughout
        finally:
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
    assert [r.status_code for r in rejected] == [429] * 3, [r.text for r in rejected]
    assert all(r.headers["retry-after"] == "1" for r in rejected)
    assert rejected[0].json()["error"]["code"] == "overloaded"
    _wait_idle(server)  # the held requests were cancelled, not left running for the next test


def test_memory_guard_refuses_with_503() -> None:
    guarded = LiveServer(make_settings(LLM_MEMORY_THRESHOLD=0.1)).start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = httpx.get(f"{guarded.url}/api/v1/health").json()["components"]["models"]
            if all(state == "failed" for state in states.values()):
                break
            time.sleep(0.1)
        assert states == {MODEL: "failed", "all-minilm-l6-v2": "failed"}  # loading was refused too
        native = httpx.post(f"{guarded.url}/api/v1/models/generate", json={"prompt": "hi"})
        assert native.status_code == 503
        assert native.json()["error"]["code"] == "memory_exceeded"
        assert native.headers["retry-after"] == "5"
        openai_style = httpx.post(
            f"{guarded.url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert openai_style.status_code == 503
        assert openai_style.json()["error"]["code"] == "memory_exceeded"
        assert httpx.get(f"{guarded.url}/api/v1/health/ready").status_code == 503
    finally:
        guarded.stop()

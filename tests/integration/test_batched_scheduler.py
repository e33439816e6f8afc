"""The llama.cpp batched scheduler (models.yaml `scheduler: batched`) through a live server and the OpenAI SDK:
concurrent requests with different settings, greedy answers alone and inside a busy batch, cancellation freeing
a slot, and prefix reuse across the turns of a chat. Evidence comes from the replies and the scheduler's counters
in GET /api/v1/models, not from timing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import jsonschema
import pytest
from openai import AsyncOpenAI

from tests.live_server import LiveServer, make_settings, smollm2_config

pytestmark = [pytest.mark.integration, pytest.mark.api]

MODEL = "smollm2-135m"
PARALLEL = 8
QUEUED = 8
COUNTING = "1, 2, 3, 4, 5,"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = smollm2_config(
        tmp_path_factory.mktemp("batched-config"), context_length=1024, scheduler="batched", parallel=PARALLEL
    )
    live = LiveServer(
        make_settings(CONFIG_DIR=str(folder), LLM_MAX_QUEUED_REQUESTS=QUEUED, LLM_MAX_PROMPT_CHARS=8000)
    ).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The shipped model on the serial scheduler, which is still an option."""
    folder = smollm2_config(tmp_path_factory.mktemp("serial-config"), context_length=1024, scheduler="serial")
    live = LiveServer(make_settings(CONFIG_DIR=str(folder))).start()
    yield live
    live.stop()


def _client(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _wait_idle(server: LiveServer) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = server.model_stats(MODEL)
        if stats["active"] == 0 and stats["running_sequences"] == 0:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"the scheduler never became idle: {stats}")


async def test_eight_concurrent_requests_with_different_settings_all_complete_correctly(batched: LiveServer) -> None:
    _wait_idle(batched)
    client = _client(batched)
    chat = [{"role": "user", "content": "Describe the sea in a few words."}]

    async def streamed(max_tokens: int) -> tuple[str, str | None, int]:
        stream = await client.completions.create(
            model=MODEL,
            prompt=COUNTING,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, completion_tokens = "", None, -1
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].text
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                completion_tokens = chunk.usage.completion_tokens
        return text, finish, completion_tokens

    results = await asyncio.gather(
        client.chat.completions.create(model=MODEL, messages=chat, max_tokens=12, temperature=0),  # type: ignore[arg-type]
        client.completions.create(model=MODEL, prompt=COUNTING, max_tokens=40, temperature=0, stop=[" 9,"]),
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Give a person's name and age."}],
            max_tokens=60,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
        ),
        client.chat.completions.create(
            model=MODEL,
            messages=chat,
            max_tokens=20,
            temperature=0.9,
            top_p=0.9,
            seed=7,  # type: ignore[arg-type]
        ),
        client.chat.completions.create(
            model=MODEL,
            messages=chat,
            max_tokens=30,
            temperature=1.3,
            seed=3,
            stop=["."],  # type: ignore[arg-type]
        ),
        client.completions.create(model=MODEL, prompt=COUNTING, max_tokens=25, temperature=0.7, seed=11),
        streamed(30),
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            max_tokens=60,
            temperature=0,
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                            "required": ["city"],
                        },
                    },
                }
            ],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        ),
    )
    short, stopped, person, warm, hot, sampled, (text, finish, streamed_tokens), tool = results

    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 12
    assert short.choices[0].message.content

    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text.startswith(" 6, 7, 8"), stopped.choices[0].text
    assert " 9," not in stopped.choices[0].text

    jsonschema.validate(json.loads(person.choices[0].message.content or ""), SCHEMA)

    for reply in (warm, hot):
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 30
    assert warm.usage is not None and warm.usage.completion_tokens <= 20
    assert "." not in (hot.choices[0].message.content or "")

    assert sampled.usage is not None and sampled.usage.completion_tokens == 25
    assert sampled.choices[0].finish_reason == "length"

    assert finish == "length" and streamed_tokens == 30
    assert text.startswith(" 6, 7, 8"), text

    assert tool.choices[0].finish_reason == "tool_calls"
    calls = tool.choices[0].message.tool_calls or []
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert "city" in json.loads(calls[0].function.arguments)  # type: ignore[union-attr]

    metrics = httpx.get(f"{batched.url}/metrics").text
    several = [line for line in metrics.splitlines() if line.startswith("sop_llm_scheduler_batch_sequences_bucket")]
    assert several, "the batch-size histogram is missing"
    one = next(line for line in several if 'le="1"' in line or 'le="1.0"' in line)
    total = next(line for line in several if 'le="+Inf"' in line)
    assert float(total.split()[-1]) > float(one.split()[-1])  # some steps decoded several sequences at once


def test_the_build_computes_every_row_of_a_batch_alike() -> None:
    """The repeatable answers below hold by construction only on a llama.cpp built without llamafile's sgemm and
    the repacked weight layouts (the Makefile builds it so); another build is named here, not left to luck."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    assert "LLAMAFILE = 1" not in info, info
    assert "REPACK = 1" not in info, info


async def test_greedy_tokens_and_logprobs_are_the_same_cold_warm_and_inside_a_busy_batch(batched: LiveServer) -> None:
    """The same greedy request asked with its prompt cold, again with the prompt's KV cells reused, and while seven
    other sequences are decoding gives the same tokens with the same log probabilities, to the last bit."""
    _wait_idle(batched)
    client = _client(batched)
    for topic in ("the sky", "the capital of France", "a fox", "gravity"):
        prompt = f"Q: Tell me about {topic}, in one short paragraph.\nA:"

        async def ask(prompt: str = prompt) -> list[tuple[str, float, list[tuple[str, float]]]]:
            answer = await client.completions.create(
                model=MODEL, prompt=prompt, max_tokens=24, temperature=0, logprobs=3
            )
            lp = answer.choices[0].logprobs
            assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
            return [
                (token, float(value or 0), sorted((top or {}).items()))
                for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)
            ]

        before = _wait_idle(batched)
        cold = await ask()
        after_cold = _wait_idle(batched)
        warm = await ask()
        after_warm = _wait_idle(batched)
        # The cold ask evaluated its prompt (all but what other prompts share); the warm one only its last token.
        assert after_warm["prompt_tokens_evaluated"] - after_cold["prompt_tokens_evaluated"] == 1
        assert after_cold["prompt_tokens_evaluated"] - before["prompt_tokens_evaluated"] > 5

        async def busy() -> None:
            await client.completions.create(model=MODEL, prompt=COUNTING, max_tokens=120, temperature=0)

        background = [asyncio.create_task(busy()) for _ in range(PARALLEL - 1)]
        for _ in range(3000):
            if batched.model_stats(MODEL)["running_sequences"] == PARALLEL - 1:
                break
            await asyncio.sleep(0.02)
        crowded = await ask()
        await asyncio.gather(*background)
        assert warm == cold, topic
        assert crowded == cold, topic


async def test_disconnect_frees_its_slot_while_the_others_continue(batched: LiveServer) -> None:
    before = _wait_idle(batched)
    client = _client(batched)

    async def long_running() -> int:
        reply = await client.completions.create(model=MODEL, prompt=COUNTING, max_tokens=150, temperature=0)
        assert reply.choices[0].finish_reason == "length"
        return reply.usage.completion_tokens if reply.usage else -1

    others = [asyncio.create_task(long_running()) for _ in range(3)]
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream(
            "POST",
            f"{batched.url}/v1/completions",
            json={"model": MODEL, "prompt": COUNTING, "max_tokens": 600, "temperature": 0, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        received = 0
        async for line in response.aiter_lines():
            received += line.startswith("data: ")
            if received == 5:
                break  # leaving the block closes the connection mid-stream
    for _ in range(1500):
        if batched.model_stats(MODEL)["slots_freed_by_cancel"] > before["slots_freed_by_cancel"]:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the cancelled request never left its slot")
    assert not all(task.done() for task in others)  # freed while the others were still decoding
    assert await asyncio.gather(*others) == [150, 150, 150]
    after = _wait_idle(batched)
    assert after["slots_freed_by_cancel"] == before["slots_freed_by_cancel"] + 1
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < 3 * 150 + 300  # not 600 for the cancelled one


async def test_the_next_turn_of_a_chat_reuses_the_cached_prefix(batched: LiveServer) -> None:
    _wait_idle(batched)
    client = _client(batched)
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a patient geography teacher who answers in two sentences."},
        {"role": "user", "content": "Name a large river in Europe."},
    ]
    first = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0)  # type: ignore[arg-type]
    before = _wait_idle(batched)
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content or ""},
        {"role": "user", "content": "Which countries does it flow through?"},
    ]
    second = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0)  # type: ignore[arg-type]
    after = _wait_idle(batched)
    assert second.usage is not None
    reused = after["prompt_tokens_reused"] - before["prompt_tokens_reused"]
    evaluated = after["prompt_tokens_evaluated"] - before["prompt_tokens_evaluated"]
    assert reused + evaluated == second.usage.prompt_tokens
    assert reused > second.usage.prompt_tokens // 2, (reused, evaluated)  # the first turn was not evaluated again
    # The answer says so too, as OpenAI's API does: a gateway routing to this service adds these up per node.
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == reused


async def test_admission_is_bounded_by_the_slots_and_the_wait_queue(batched: LiveServer) -> None:
    """`parallel` requests decode at once, LLM_MAX_QUEUED_REQUESTS more wait for a slot, the rest get 429."""
    _wait_idle(batched)
    body = {"model": MODEL, "prompt": COUNTING, "max_tokens": 60, "temperature": 0}
    total = PARALLEL + QUEUED + 2
    async with httpx.AsyncClient(timeout=120) as http:
        replies = await asyncio.gather(*(http.post(f"{batched.url}/v1/completions", json=body) for _ in range(total)))
    assert sorted(r.status_code for r in replies) == [200] * (PARALLEL + QUEUED) + [429] * 2
    texts = {r.json()["choices"][0]["text"] for r in replies if r.status_code == 200}
    assert all(r.json()["usage"]["completion_tokens"] == 60 for r in replies if r.status_code == 200)
    assert all(text.startswith(" 6, 7, 8, 9, 10") for text in texts), texts
    assert batched.model_stats(MODEL)["peak_running_sequences"] == PARALLEL


async def test_n_choices_and_logprobs_through_the_sdk(batched: LiveServer) -> None:
    import math

    client = _client(batched)
    chat = [{"role": "user", "content": "Name a colour."}]
    answer = await client.chat.completions.create(
        model=MODEL, messages=chat, max_tokens=6, temperature=0.9, seed=7, n=2, logprobs=True, top_logprobs=3
    )
    assert [c.index for c in answer.choices] == [0, 1]
    for choice in answer.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        text = "".join(entry.token for entry in choice.logprobs.content)
        assert text.startswith(choice.message.content or "")  # the tokens spell the answer
        for entry in choice.logprobs.content:
            assert entry.logprob <= 0 and bytes(entry.bytes or []) == entry.token.encode()
            assert len(entry.top_logprobs) == 3
            best = [alt.logprob for alt in entry.top_logprobs]
            assert best == sorted(best, reverse=True)
            assert entry.logprob <= best[0] + 1e-9  # no token is likelier than the likeliest
            assert sum(math.exp(lp) for lp in best) <= 1 + 1e-6
    # Greedy: every token is the likeliest one, and a second run gives the same log probabilities.
    greedy = [
        await client.chat.completions.create(
            model=MODEL, messages=chat, max_tokens=6, temperature=0, logprobs=True, top_logprobs=1
        )
        for _ in range(2)
    ]
    first, second = (g.choices[0].logprobs.content for g in greedy)  # type: ignore[union-attr]
    assert answer.usage is not None and greedy[0].usage is not None
    assert answer.usage.prompt_tokens == greedy[0].usage.prompt_tokens  # the prompt is counted once for n=2
    assert first is not None and second is not None
    for entry in first:
        assert entry.token == entry.top_logprobs[0].token
    assert [round(e.logprob, 4) for e in first] == [round(e.logprob, 4) for e in second]
    # Legacy completions: logprobs as parallel lists, and several prompts at once.
    legacy = await client.completions.create(
        model=MODEL, prompt=["1, 2, 3,", "a, b, c,"], max_tokens=4, temperature=0, logprobs=2, n=2
    )
    assert len(legacy.choices) == 4 and [c.index for c in legacy.choices] == [0, 1, 2, 3]
    assert legacy.choices[0].text == legacy.choices[1].text  # greedy: the same choice twice
    lp = legacy.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.text_offset[0] == 0 and all(len(alts) == 2 for alts in lp.top_logprobs)
    # Streaming carries the log probabilities of the tokens in each chunk.
    stream = await client.chat.completions.create(
        model=MODEL, messages=chat, max_tokens=6, temperature=0, logprobs=True, stream=True
    )
    streamed = [
        entry
        async for chunk in stream
        for choice in chunk.choices
        if choice.logprobs
        for entry in choice.logprobs.content or []
    ]
    assert [e.token for e in streamed] == [e.token for e in first]


async def test_what_cannot_be_served_is_refused_with_400(
    batched: LiveServer, serial: LiveServer, server: LiveServer
) -> None:
    import openai

    client = _client(batched)
    chat = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.BadRequestError, match="stream"):
        await client.chat.completions.create(model=MODEL, messages=chat, n=2, stream=True)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        await client.chat.completions.create(model=MODEL, messages=chat, top_logprobs=2)
    with pytest.raises(openai.NotFoundError):  # every choice fails alike: the request fails as one would
        await client.completions.create(model="no-such-model", prompt=["a", "b"], n=2)
    with pytest.raises(openai.BadRequestError, match="at most 16"):
        await client.completions.create(model=MODEL, prompt=["a"] * 9, n=2)
    # The serial scheduler keeps no logits; the shipped default (batched) does.
    with pytest.raises(openai.BadRequestError, match="scheduler: batched"):
        await _client(serial).chat.completions.create(model=MODEL, messages=chat, logprobs=True, max_tokens=2)
    shipped = await _client(server).chat.completions.create(model=MODEL, messages=chat, logprobs=True, max_tokens=2)
    assert shipped.choices[0].logprobs is not None and shipped.choices[0].logprobs.content


@pytest.mark.parametrize("scheduler", ["batched", "serial"])
async def test_top_k_min_p_logit_bias_and_penalties_reach_the_sampler(
    scheduler: str, batched: LiveServer, serial: LiveServer
) -> None:
    live = batched if scheduler == "batched" else serial
    client = AsyncOpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)
    chat = [{"role": "user", "content": "Write one sentence about the sea."}]

    async def say(max_tokens: int = 12, **settings: object) -> str:
        answer = await client.chat.completions.create(  # type: ignore[call-overload]
            model=MODEL, messages=chat, max_tokens=max_tokens, **settings
        )
        return str(answer.choices[0].message.content)

    greedy = await say(temperature=0)
    # Keeping only the likeliest token makes any temperature and seed greedy.
    assert await say(temperature=1.5, seed=1, extra_body={"top_k": 1}) == greedy
    assert await say(temperature=1.5, seed=2, extra_body={"top_k": 1}) == greedy
    assert await say(temperature=1.5, seed=3, extra_body={"min_p": 1.0}) == greedy
    # A large bias makes a token the answer.
    token = httpx.post(f"{live.url}/tokenize", json={"model": MODEL, "prompt": " banana", "add_special_tokens": False})
    banana = token.json()["tokens"][0]
    assert (await say(temperature=0, logit_bias={str(banana): 100}, max_tokens=3)).count("banana") == 3
    # Penalties change what a greedy answer repeats.
    echo = [{"role": "user", "content": "Repeat after me: yes yes yes yes yes yes yes yes"}]
    plain = await client.chat.completions.create(model=MODEL, messages=echo, max_tokens=16, temperature=0)
    penalised = await client.chat.completions.create(
        model=MODEL, messages=echo, max_tokens=16, temperature=0, frequency_penalty=2.0, presence_penalty=2.0
    )
    words = [str(a.choices[0].message.content).lower().count("yes") for a in (plain, penalised)]
    assert words[1] < words[0], words
    with pytest.raises(Exception, match="outside model") as refused:
        await say(temperature=0, logit_bias={"99999999": 5})
    assert getattr(refused.value, "status_code", None) == 400

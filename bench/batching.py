"""Many users on one local model: the batched scheduler next to the serial one, same model, same machine, one run.

Each scheduler gets its own service process — batched: the repository's config/ as shipped (the default scheduler);
serial: a models.yaml with only SmolLM2 on it on the serial scheduler — and the same four measurements, every one a
ratio against the same work done alone:
- aggregate tok/s of 8 concurrent 128-token streams ÷ one stream's tok/s;
- p50 latency of 32 short chats (16 tokens) sent 8 at a time ÷ the same chat alone, printed beside the floor this
  machine's prefill rate allows (`_floor_ms`);
- p50 of short chats sent one after another beside one long grammar-constrained (json_schema) request ÷ alone;
- time to first token of a chat's second turn on a ~1,500-token history ÷ that of its first turn.

Beside them, per scheduler: single-stream tok/s against raw llama-cpp-python (bench/generation.py, alternating), and
for `batched` a soak: 2,000 mixed requests at concurrency 8 (chats, JSON-schema chats, streams read to the end and
streams dropped after two chunks), comparing the service's RSS and KV-cache cells in use after it with the same
figures after a 200-request warm-up of the same mix.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import generation
from bench.service import Service

MODEL = "smollm2-135m"
COUNTING = "1, 2, 3, 4, 5,"  # SmolLM2 keeps counting: a stream runs to max_tokens
STREAM_TOKENS = 128
SHORT_CHAT = {"messages": [{"role": "user", "content": "Say hello to the team."}], "max_tokens": 16}
COLORS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]
# ~1,500 tokens of history: facts the second turn asks about.
HISTORY = " ".join(f"Fact {i}: the {COLORS[i % 8]} box number {i} holds {i * 7 % 50} marbles." for i in range(82))
LONG_SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "string"}, "minItems": 40}},
    "required": ["items"],
}


SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "config"


def _config(scheduler: str) -> str:
    """batched: the repository's config/ as shipped (its default scheduler, parallel and threads, with the embedding
    model loaded as a newcomer's `make run` has it); serial: the same model on the serial scheduler alone."""
    if scheduler == "batched":
        return str(SHIPPED_CONFIG)
    folder = tempfile.mkdtemp(prefix=f"sop-llm-bench-{scheduler}-")
    model: dict[str, Any] = {
        "provider": "llamacpp",
        "model": "embedded:smollm2-135m-instruct",
        "context_length": 2048,
        "load_on_startup": True,
        "scheduler": scheduler,
    }
    (Path(folder) / "providers.yaml").write_text("providers:\n  llamacpp: {type: llamacpp}\n")
    (Path(folder) / "models.yaml").write_text(json.dumps({"models": {MODEL: model}}))
    (Path(folder) / "embeddings.yaml").write_text("embeddings: {}\n")
    return folder


async def _stream(
    session: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any]
) -> tuple[float, float, int]:
    """(seconds to the first token, seconds in all, completion tokens) of one streamed request."""
    started = time.perf_counter()
    first = float("nan")
    tokens = 0
    payload = {"model": MODEL, "temperature": 0, **body, "stream": True, "stream_options": {"include_usage": True}}
    async with session.post(f"{url}{path}", json=payload) as response:
        response.raise_for_status()
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first != first and event.get("choices"):
                first = time.perf_counter() - started
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return first, time.perf_counter() - started, tokens


async def _chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[float, dict[str, int]]:
    """(seconds, usage) of one chat."""
    started = time.perf_counter()
    async with session.post(f"{url}/v1/chat/completions", json={"model": MODEL, "temperature": 0, **body}) as reply:
        reply.raise_for_status()
        usage: dict[str, int] = (await reply.json())["usage"]
    return time.perf_counter() - started, usage


def _prefill_tok_s(prompt_tokens: int) -> float:
    """Raw llama-cpp-python's prefill rate for one prompt of `prompt_tokens` tokens from an empty cache, in this
    process with the service's threads (median of 5)."""
    raw = generation.Raw()
    tokens = raw.llama.tokenize(HISTORY.encode())[:prompt_tokens]
    seconds = []
    for _ in range(5):
        raw.llama.reset()
        started = time.perf_counter()
        raw.llama.eval(tokens)
        seconds.append(time.perf_counter() - started)
    raw.llama.close()
    return len(tokens) / statistics.median(seconds)


async def _prompt_tokens_evaluated(session: aiohttp.ClientSession, url: str) -> int | None:
    """The batched scheduler's count of prompt tokens evaluated (not reused from a slot's cache); None on serial."""
    async with session.get(f"{url}/api/v1/models") as reply:
        stats = next(m for m in (await reply.json())["models"] if m["name"] == MODEL)["stats"]
    evaluated: int | None = stats.get("prompt_tokens_evaluated")
    return evaluated


def _floor_ms(r: dict[str, Any]) -> float:
    """The p50 the 32 short chats at c8 would have if every position were evaluated at this machine's best rate.
    Every token a chat costs is one position the model evaluates: the prompt tokens the engine evaluated for it
    (every one on serial; batched reuses a slot's cached prefix) and each completion token. llama.cpp evaluates
    positions fastest in its largest batches — the prefill of a wave's prompts together, measured in this process;
    decoding 8 sequences a step is slower per position. With 8 chats at a time the 32 come in 4 waves, each chat
    lasting its wave:
        floor = (prompt tokens evaluated + completion tokens) / prefill tok/s / (32 / 8)
    A yardstick rather than a proof: continuous batching lets the waves overlap, so a p50 may come out a little
    under it."""
    positions = r["short_chat_c8_prompt_evaluated"] + r["short_chat_c8_completion_tokens"]
    return float(positions) / r["prefill_tok_s"] / (32 / 8) * 1000


async def _measure(url: str) -> dict[str, float]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        counting = {"prompt": COUNTING, "max_tokens": STREAM_TOKENS}
        await _stream(session, url, "/v1/completions", counting)  # warm up
        one = [await _stream(session, url, "/v1/completions", counting) for _ in range(2)]
        single_tok_s = statistics.median(tokens / seconds for _, seconds, tokens in one)
        started = time.perf_counter()
        eight = await asyncio.gather(*(_stream(session, url, "/v1/completions", counting) for _ in range(8)))
        aggregate_tok_s = sum(tokens for _, _, tokens in eight) / (time.perf_counter() - started)

        alone = statistics.median([(await _chat(session, url, SHORT_CHAT))[0] for _ in range(5)])
        gate = asyncio.Semaphore(8)

        async def gated() -> tuple[float, dict[str, int]]:
            async with gate:
                return await _chat(session, url, SHORT_CHAT)

        evaluated_before = await _prompt_tokens_evaluated(session, url)
        chats = await asyncio.gather(*(gated() for _ in range(32)))
        busy = statistics.median(seconds for seconds, _ in chats)
        prompt_tokens = sum(usage["prompt_tokens"] for _, usage in chats)
        evaluated_after = await _prompt_tokens_evaluated(session, url)
        evaluated = prompt_tokens  # serial evaluates every prompt whole
        if evaluated_before is not None and evaluated_after is not None:
            evaluated = evaluated_after - evaluated_before

        long_body = {
            "messages": [{"role": "user", "content": "List forty animals."}],
            "max_tokens": 600,
            "response_format": {"type": "json_schema", "json_schema": {"name": "animals", "schema": LONG_SCHEMA}},
        }
        long_request = asyncio.create_task(_chat(session, url, long_body))
        await asyncio.sleep(0.5)  # the long request is running
        beside: list[float] = []
        while not long_request.done() and len(beside) < 8:
            beside.append((await _chat(session, url, SHORT_CHAT))[0])
        long_seconds, _ = await long_request

        first_turn = [{"role": "user", "content": f"{HISTORY}\n\nHow many marbles are in box 3?"}]
        first_ttft, _, _ = await _stream(
            session, url, "/v1/chat/completions", {"messages": first_turn, "max_tokens": 16}
        )
        second_turn = [
            *first_turn,
            {"role": "assistant", "content": "Box 3 holds 21 marbles."},
            {"role": "user", "content": "And box 4?"},
        ]
        second_ttft, _, _ = await _stream(
            session, url, "/v1/chat/completions", {"messages": second_turn, "max_tokens": 16}
        )
    return {
        "single_stream_tok_s": single_tok_s,
        "eight_streams_tok_s": aggregate_tok_s,
        "eight_streams_ratio": aggregate_tok_s / single_tok_s,
        "short_chat_alone_ms": alone * 1000,
        "short_chat_c8_p50_ms": busy * 1000,
        "short_chat_c8_ratio": busy / alone,
        "short_chat_c8_prompt_tokens": prompt_tokens,
        "short_chat_c8_prompt_evaluated": evaluated,
        "short_chat_c8_completion_tokens": sum(usage["completion_tokens"] for _, usage in chats),
        "beside_long_p50_ms": statistics.median(beside) * 1000 if beside else float("nan"),
        "beside_long_ratio": statistics.median(beside) / alone if beside else float("nan"),
        "beside_long_count": len(beside),
        "long_request_s": long_seconds,
        "first_turn_ttft_ms": first_ttft * 1000,
        "second_turn_ttft_ms": second_ttft * 1000,
        "second_turn_ratio": second_ttft / first_ttft,
    }


SOAK_MIX: list[tuple[str, dict[str, Any], bool]] = [  # (path, body, drop the stream after two chunks)
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 8}, False),
    ("/v1/completions", {"prompt": COUNTING, "max_tokens": 64, "stream": True}, True),
    (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "Invent a person."}],
            "max_tokens": 24,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "p",
                    "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
                },
            },
        },
        False,
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "stream": True},
        False,
    ),
]


async def _soak_round(session: aiohttp.ClientSession, url: str, count: int) -> int:
    """Send `count` requests of the mix, 8 at a time; the number that failed (a dropped stream is not a failure)."""
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> bool:
        path, body, drop = SOAK_MIX[i % len(SOAK_MIX)]
        async with gate, session.post(f"{url}{path}", json={"model": MODEL, "temperature": 0.7, **body}) as reply:
            if reply.status != 200:
                return False
            if drop:
                chunks = 0
                async for _ in reply.content:
                    chunks += 1
                    if chunks == 2:
                        break  # leaving the block closes the connection: the request is cancelled
                return True
            await reply.read()
            return True

    return sum(not ok for ok in await asyncio.gather(*(one(i) for i in range(count))))


async def _settled(session: aiohttp.ClientSession, url: str, pid: int) -> dict[str, float]:
    """Once nothing runs: the scheduler's counters and the service's resident memory."""
    import psutil

    deadline = time.monotonic() + 60
    while True:
        async with session.get(f"{url}/api/v1/models") as reply:
            stats = next(m for m in (await reply.json())["models"] if m["name"] == MODEL)["stats"]
        if (stats["active"] == 0 and stats["running_sequences"] == 0) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return {
        "rss_mb": psutil.Process(pid).memory_info().rss / 2**20,
        "kv_cells_used": stats["kv_cells_used"],
        "running": stats["running_sequences"],
        "waiting": stats.get("waiting", 0),
        "freed_by_cancel": stats["slots_freed_by_cancel"],
    }


async def _soak(url: str, pid: int, warmup: int = 200, count: int = 2000) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        warm_failed = await _soak_round(session, url, warmup)
        before = await _settled(session, url, pid)
        started = time.perf_counter()
        failed = await _soak_round(session, url, count)
        seconds = time.perf_counter() - started
        after = await _settled(session, url, pid)
    return {"requests": count, "seconds": seconds, "failed": failed + warm_failed, "before": before, "after": after}


def run() -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for scheduler in ("serial", "batched"):
        with Service(CONFIG_DIR=_config(scheduler), LLM_MAX_PROMPT_CHARS="20000") as service:
            results[scheduler] = r = asyncio.run(_measure(service.url))
            # A perfect scheduler evaluates a wave's 8 prompts as one batch: the prefill rate of that many tokens.
            r["prefill_tok_s"] = _prefill_tok_s(round(r["short_chat_c8_prompt_tokens"] / 4))
            r["short_chat_c8_floor_ms"] = _floor_ms(r)
            single = generation.interleaved(service.url)
            results[scheduler]["raw_single_tok_s"] = single["raw_tok_per_s"]
            results[scheduler]["api_single_tok_s"] = single["api_tok_per_s"]
            results[scheduler]["single_vs_raw"] = single["api_tok_per_s"] / single["raw_tok_per_s"]
            if scheduler == "batched":
                results[scheduler]["soak"] = asyncio.run(_soak(service.url, service.pid))
    return results


def summary(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for scheduler, r in results.items():
        soak = r.get("soak")
        if soak is not None:
            b, a = soak["before"], soak["after"]
            lines.append(
                f"local engine, batched soak: {soak['requests']} mixed requests in {soak['seconds']:.0f} s, "
                f"{soak['failed']} failed, {a['freed_by_cancel'] - b['freed_by_cancel']} slots freed by dropped "
                f"streams | after a 200-request warm-up -> after: RSS {b['rss_mb']:.0f} -> {a['rss_mb']:.0f} MB, "
                f"KV cells in use {b['kv_cells_used']} -> {a['kv_cells_used']}, running {a['running']}, "
                f"waiting {a['waiting']}"
            )
        lines.append(
            f"local engine, {scheduler}: single stream {r['api_single_tok_s']:.1f} tok/s vs raw llama-cpp-python "
            f"{r['raw_single_tok_s']:.1f} ({r['single_vs_raw']:.0%}; target >= 95 %)"
        )
        lines.append(
            f"local engine, {scheduler}: 8 streams {r['eight_streams_tok_s']:.1f} tok/s vs one "
            f"{r['single_stream_tok_s']:.1f} (x{r['eight_streams_ratio']:.2f}; target >= 1.5) | short chat alone "
            f"{r['short_chat_alone_ms']:.0f} ms, p50 of 32 at c8 {r['short_chat_c8_p50_ms']:.0f} ms "
            f"(x{r['short_chat_c8_ratio']:.2f}; no fixed target; floor {r['short_chat_c8_floor_ms']:.0f} ms = the 32 "
            f"chats' prompt tokens evaluated ({r['short_chat_c8_prompt_evaluated']} of "
            f"{r['short_chat_c8_prompt_tokens']}) + their {r['short_chat_c8_completion_tokens']} completion tokens, "
            f"at a wave's prefill {r['prefill_tok_s']:.0f} tok/s, over 4 waves of 8) | beside a long json_schema "
            "request "
            f"{r['beside_long_p50_ms']:.0f} ms (x{r['beside_long_ratio']:.2f} over {r['beside_long_count']:.0f}; "
            f"target <= 3) | second turn first token {r['second_turn_ttft_ms']:.0f} ms vs first "
            f"{r['first_turn_ttft_ms']:.0f} ms ({r['second_turn_ratio']:.0%}; target <= 30 %)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    figures = run()
    print(json.dumps(figures, indent=2))
    print(summary(figures))

"""Many users on one local model: the batched scheduler next to the serial one, same model, same machine, one run.

Each scheduler gets its own service process (a models.yaml with only SmolLM2 on it, no embedding model) and the
same four measurements, every one a ratio against the same work done alone:
- aggregate tok/s of 8 concurrent 128-token streams ÷ one stream's tok/s;
- p50 latency of 32 short chats (16 tokens) sent 8 at a time ÷ the same chat alone;
- p50 of short chats sent one after another beside one long grammar-constrained (json_schema) request ÷ alone;
- time to first token of a chat's second turn on a ~1,500-token history ÷ that of its first turn.
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


def _config(scheduler: str) -> str:
    folder = tempfile.mkdtemp(prefix=f"sop-llm-bench-{scheduler}-")
    model: dict[str, Any] = {
        "provider": "llamacpp",
        "model": "embedded:smollm2-135m-instruct",
        "context_length": 2048,
        "load_on_startup": True,
    }
    if scheduler == "batched":
        model.update(scheduler="batched", parallel=8)
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


async def _chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    async with session.post(f"{url}/v1/chat/completions", json={"model": MODEL, "temperature": 0, **body}) as reply:
        reply.raise_for_status()
        await reply.read()
    return time.perf_counter() - started


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

        alone = statistics.median([await _chat(session, url, SHORT_CHAT) for _ in range(5)])
        gate = asyncio.Semaphore(8)

        async def gated() -> float:
            async with gate:
                return await _chat(session, url, SHORT_CHAT)

        busy = statistics.median(await asyncio.gather(*(gated() for _ in range(32))))

        long_body = {
            "messages": [{"role": "user", "content": "List forty animals."}],
            "max_tokens": 600,
            "response_format": {"type": "json_schema", "json_schema": {"name": "animals", "schema": LONG_SCHEMA}},
        }
        long_request = asyncio.create_task(_chat(session, url, long_body))
        await asyncio.sleep(0.5)  # the long request is running
        beside: list[float] = []
        while not long_request.done() and len(beside) < 8:
            beside.append(await _chat(session, url, SHORT_CHAT))
        long_seconds = await long_request

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
        "beside_long_p50_ms": statistics.median(beside) * 1000 if beside else float("nan"),
        "beside_long_ratio": statistics.median(beside) / alone if beside else float("nan"),
        "beside_long_count": len(beside),
        "long_request_s": long_seconds,
        "first_turn_ttft_ms": first_ttft * 1000,
        "second_turn_ttft_ms": second_ttft * 1000,
        "second_turn_ratio": second_ttft / first_ttft,
    }


def run() -> dict[str, dict[str, float]]:
    results = {}
    for scheduler in ("serial", "batched"):
        with Service(CONFIG_DIR=_config(scheduler), LLM_MAX_PROMPT_CHARS="20000") as service:
            results[scheduler] = asyncio.run(_measure(service.url))
    return results


def summary(results: dict[str, dict[str, float]]) -> str:
    lines = []
    for scheduler, r in results.items():
        lines.append(
            f"local engine, {scheduler}: 8 streams {r['eight_streams_tok_s']:.1f} tok/s vs one "
            f"{r['single_stream_tok_s']:.1f} (x{r['eight_streams_ratio']:.2f}; target >= 1.5) | short chat alone "
            f"{r['short_chat_alone_ms']:.0f} ms, p50 of 32 at c8 {r['short_chat_c8_p50_ms']:.0f} ms "
            f"(x{r['short_chat_c8_ratio']:.2f}; target <= 4) | beside a long json_schema request "
            f"{r['beside_long_p50_ms']:.0f} ms (x{r['beside_long_ratio']:.2f} over {r['beside_long_count']:.0f}; "
            f"target <= 3) | second turn first token {r['second_turn_ttft_ms']:.0f} ms vs first "
            f"{r['first_turn_ttft_ms']:.0f} ms ({r['second_turn_ratio']:.0%}; target <= 30 %)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    figures = run()
    print(json.dumps(figures, indent=2))
    print(summary(figures))

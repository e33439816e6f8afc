"""Generation: tok/s and first-token latency through the API vs raw llama-cpp-python, same model and threads."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import aiohttp
import httpx

PROMPT = "1, 2, 3, 4, 5,"  # SmolLM2 keeps counting: every run generates exactly MAX_TOKENS tokens
MAX_TOKENS = 256
RUNS = 5


class Raw:
    """llama-cpp-python on the same GGUF with the same thread count, in this process."""

    def __init__(self) -> None:
        from llama_cpp import Llama

        from sop_llm.providers.local.embedded import resolve_model_path

        self.llama = Llama(
            model_path=resolve_model_path("embedded:smollm2-135m-instruct"),
            n_ctx=2048,
            n_threads=os.cpu_count() or 1,
            verbose=False,
        )
        self.llama.create_completion(PROMPT, max_tokens=16, temperature=0)

    def tok_per_s(self) -> float:
        started = time.perf_counter()
        out = self.llama.create_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        return out["usage"]["completion_tokens"] / (time.perf_counter() - started)  # type: ignore[index]

    def first_token_s(self) -> float:
        started = time.perf_counter()
        stream = self.llama.create_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0, stream=True)
        next(iter(stream))  # type: ignore[call-overload]
        elapsed = time.perf_counter() - started
        for _ in stream:  # type: ignore[union-attr]
            pass
        return elapsed


class Api:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=120)
        self.body = {"model": "smollm2-135m", "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
        self.client.post("/v1/completions", json={**self.body, "max_tokens": 16})

    def tok_per_s(self) -> float:
        started = time.perf_counter()
        reply = self.client.post("/v1/completions", json=self.body).json()
        return float(reply["usage"]["completion_tokens"]) / (time.perf_counter() - started)

    def first_token_s(self) -> float:
        started = time.perf_counter()
        elapsed = float("nan")
        with self.client.stream("POST", "/v1/completions", json={**self.body, "stream": True}) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and elapsed != elapsed:
                    elapsed = time.perf_counter() - started
        return elapsed


def interleaved(url: str) -> dict[str, float]:
    """Alternate raw and API runs so that drifts in machine speed hit both sides alike."""
    raw, through_api = Raw(), Api(url)
    raw_rates, api_rates, raw_firsts, api_firsts = [], [], [], []
    for _ in range(RUNS):
        api_rates.append(through_api.tok_per_s())
        raw_rates.append(raw.tok_per_s())
        api_firsts.append(through_api.first_token_s())
        raw_firsts.append(raw.first_token_s())
    raw.llama.close()
    return {
        "raw_tok_per_s": statistics.median(raw_rates),
        "api_tok_per_s": statistics.median(api_rates),
        "raw_first_token_ms": statistics.median(raw_firsts) * 1000,
        "api_first_token_ms": statistics.median(api_firsts) * 1000,
    }


async def _concurrent(url: str, count: int) -> tuple[int, float]:
    body = {"model": "smollm2-135m", "prompt": PROMPT, "max_tokens": 64, "temperature": 0}
    async with aiohttp.ClientSession() as session:

        async def one() -> dict[str, object]:
            async with session.post(f"{url}/v1/completions", json=body) as response:
                result: dict[str, object] = await response.json()
                return result

        started = time.perf_counter()
        replies = await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - started
    complete = sum(
        1
        for r in replies
        if r.get("choices") and r["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    )
    return complete, elapsed


def run(url: str) -> dict[str, float]:
    figures = interleaved(url)
    complete, elapsed = asyncio.run(_concurrent(url, 8))
    return {
        **figures,
        "ratio": figures["api_tok_per_s"] / figures["raw_tok_per_s"],
        "first_token_overhead_ms": figures["api_first_token_ms"] - figures["raw_first_token_ms"],
        "concurrent_8_complete": complete,
        "concurrent_8_seconds": elapsed,
    }

"""Embeddings: 512 one-sentence HTTP requests at concurrency 64 vs raw in-process batch-64 encoding."""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp

SENTENCES = 512
CONCURRENCY = 64


def sentences(tag: str, count: int = SENTENCES) -> list[str]:
    subjects = ["The engineer", "A small dog", "Our new service", "The river", "My grandmother", "The committee"]
    verbs = ["describes", "ignores", "measures", "celebrates", "questions", "rebuilds"]
    objects = ["the quarterly report", "a quiet harbour", "every failing test", "the old bridge", "a bowl of soup"]
    return [f"{subjects[i % 6]} {verbs[(i // 6) % 6]} {objects[(i // 36) % 5]} ({tag} #{i})." for i in range(count)]


class RawEncoder:
    """The same model encoding in batches of 64 in this process: the ceiling for the HTTP path."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        from sop_llm.providers.local.embedded import resolve_model_path

        path = resolve_model_path("embedded:all-minilm-l6-v2")
        self.model = SentenceTransformer(path, device="cpu", local_files_only=True)
        self.model.encode(sentences("warm", 128), batch_size=64, normalize_embeddings=True)

    def throughput(self, texts: list[str]) -> float:
        started = time.perf_counter()
        self.model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return len(texts) / (time.perf_counter() - started)


async def _http_throughput(url: str, texts: list[str], encoding: str) -> float:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                text = queue.get_nowait()
                body = {"model": "all-minilm-l6-v2", "input": text, "encoding_format": encoding}
                async with session.post(f"{url}/v1/embeddings", json=body) as response:
                    assert response.status == 200, await response.text()
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(texts) / (time.perf_counter() - started)


async def _cached_latency(url: str, requests: int = 300) -> float:
    body = {"model": "all-minilm-l6-v2", "input": "a sentence that is cached after the first request"}
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            started = time.perf_counter()
            async with session.post(f"{url}/v1/embeddings", json=body) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)
    return statistics.median(latencies[20:]) * 1000


def run(url: str, rounds: int = 3) -> dict[str, float]:
    """Alternate raw and HTTP rounds (fresh sentences each time, so nothing is cached) and take medians."""
    raw = RawEncoder()
    asyncio.run(_http_throughput(url, sentences("warm-http", 128), "base64"))
    raws, b64s, floats = [], [], []
    for r in range(rounds):
        raws.append(raw.throughput(sentences(f"raw-{r}")))
        b64s.append(asyncio.run(_http_throughput(url, sentences(f"b64-{r}"), "base64")))
        floats.append(asyncio.run(_http_throughput(url, sentences(f"float-{r}"), "float")))
    raw_rate = statistics.median(raws)
    return {
        "raw_batch64_per_s": raw_rate,
        "http_c64_base64_per_s": statistics.median(b64s),
        "http_c64_float_per_s": statistics.median(floats),
        "ratio_base64": statistics.median(b64s) / raw_rate,
        "ratio_float": statistics.median(floats) / raw_rate,
        "cached_request_p50_ms": asyncio.run(_cached_latency(url)),
    }

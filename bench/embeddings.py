"""Embeddings: 512 one-sentence HTTP requests at concurrency 64 vs raw in-process batch-64 encoding.

The baseline is sentence-transformers on torch (the library itself, batches of 64); beside it, the raw onnx and
onnx-int8 paths (the service's provider called in-process, batches of 64, no HTTP). Every round uses fresh random
~12-word sentences, so no figure comes from the service's cache, even a Redis one that outlives the process.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from typing import Any

import aiohttp

SENTENCES = 512
CONCURRENCY = 64
BATCH = 64
MODEL = "embedded:all-minilm-l6-v2"
_VOCABULARY = (
    "the a our every small quiet old new river harbour engineer committee grandmother service report bridge soup "
    "measures describes ignores rebuilds celebrates questions tomorrow yesterday quickly because although while "
    "latency throughput kitten volcano market law tax pizza weather Paris Tokyo London happily never always seven "
    "invoices contracts sunlight garden teacher window morning train letter music city forest coffee"
)
_WORDS = _VOCABULARY.split()
_random = random.Random()  # seeded from the OS: different sentences in every run


def sentences(count: int = SENTENCES) -> list[str]:
    """Fresh sentences of ~12 words (10 to 14), never seen by the service before."""
    return [" ".join(_random.choices(_WORDS, k=_random.randint(10, 14))).capitalize() + "." for _ in range(count)]


class RawTorch:
    """sentence-transformers on torch encoding in batches of 64 in this process: the baseline."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        from sop_llm.providers.local.embedded import resolve_model_path

        self.model = SentenceTransformer(resolve_model_path(MODEL), device="cpu", local_files_only=True)
        self.model.encode(sentences(128), batch_size=BATCH, normalize_embeddings=True)

    def throughput(self, texts: list[str]) -> float:
        started = time.perf_counter()
        self.model.encode(texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)
        return len(texts) / (time.perf_counter() - started)


class RawOnnx:
    """The service's onnx provider called in-process in batches of 64 (tokenize, run, pool), without HTTP."""

    def __init__(self, quantize: Any, threads: int | None) -> None:
        from sop_llm.infra.model_config import EmbeddingModelConfig, ProviderConfig
        from sop_llm.providers.local.onnx_embeddings import OnnxEmbeddingsProvider

        options = {"threads": threads} if threads else {}
        config = EmbeddingModelConfig(
            provider="local-embeddings", model=MODEL, backend="onnx", quantize=quantize, options=options
        )
        self.provider = OnnxEmbeddingsProvider("bench", config, ProviderConfig(type="sentence_transformers"))
        self.provider.load_blocking()
        self.throughput(sentences(128))

    def throughput(self, texts: list[str]) -> float:
        started = time.perf_counter()
        for i in range(0, len(texts), BATCH):
            self.provider.encode_blocking(texts[i : i + BATCH])
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


def served_backend() -> str:
    """What the service serves the default embedding model with, as configured (e.g. `onnx int8`)."""
    from pathlib import Path

    import yaml

    entry = yaml.safe_load(Path("config/embeddings.yaml").read_text())["embeddings"]["all-minilm-l6-v2"]
    return " ".join(str(part) for part in (entry.get("backend", "torch"), entry.get("quantize")) if part)


def served_threads() -> int:
    """The served model's onnxruntime threads: EMBEDDING_THREADS, else the shipped config's 2."""
    return int(os.environ.get("EMBEDDING_THREADS") or 2)


def run(url: str, rounds: int = 3, onnx_threads: int | None = None) -> dict[str, Any]:
    """Alternate the raw encoders and the HTTP rounds (fresh sentences each time) and take medians.

    The machine's speed drifts, so only ratios within one run mean much; `onnx_threads` sets the raw onnx
    encoders' onnxruntime threads (default: the served model's, EMBEDDING_THREADS or the shipped config's 2)."""
    threads = onnx_threads or served_threads()
    raw_torch, raw_fp32, raw_int8 = RawTorch(), RawOnnx(None, threads), RawOnnx("int8", threads)
    asyncio.run(_http_throughput(url, sentences(128), "base64"))
    figures: dict[str, list[float]] = {"torch": [], "onnx": [], "onnx_int8": [], "base64": [], "float": []}
    for _ in range(rounds):
        figures["torch"].append(raw_torch.throughput(sentences()))
        figures["onnx"].append(raw_fp32.throughput(sentences()))
        figures["onnx_int8"].append(raw_int8.throughput(sentences()))
        figures["base64"].append(asyncio.run(_http_throughput(url, sentences(), "base64")))
        figures["float"].append(asyncio.run(_http_throughput(url, sentences(), "float")))
    rate = {name: statistics.median(values) for name, values in figures.items()}
    return {
        "served_backend": served_backend(),
        "raw_batch64_per_s": rate["torch"],
        "raw_onnx_batch64_per_s": rate["onnx"],
        "raw_onnx_int8_batch64_per_s": rate["onnx_int8"],
        "http_c64_base64_per_s": rate["base64"],
        "http_c64_float_per_s": rate["float"],
        "ratio_base64": rate["base64"] / rate["torch"],
        "ratio_float": rate["float"] / rate["torch"],
        "ratio_raw_onnx": rate["onnx"] / rate["torch"],
        "ratio_raw_onnx_int8": rate["onnx_int8"] / rate["torch"],
        "cached_request_p50_ms": asyncio.run(_cached_latency(url)),
    }


def summary(emb: dict[str, Any]) -> str:
    """One line for `make bench`: the HTTP figure on the served backend as a ratio of raw torch, raw onnx beside."""
    return (
        f"embeddings ({emb['served_backend']} served): HTTP c64 base64 {emb['http_c64_base64_per_s']:.0f}/s = "
        f"{emb['ratio_base64']:.2f}x raw torch batch-64 {emb['raw_batch64_per_s']:.0f}/s (target >= 1.5x) | HTTP c64 "
        f"float {emb['http_c64_float_per_s']:.0f}/s ({emb['ratio_float']:.2f}x) | raw onnx "
        f"{emb['raw_onnx_batch64_per_s']:.0f}/s ({emb['ratio_raw_onnx']:.2f}x), raw onnx int8 "
        f"{emb['raw_onnx_int8_batch64_per_s']:.0f}/s ({emb['ratio_raw_onnx_int8']:.2f}x) | cached p50 "
        f"{emb['cached_request_p50_ms']:.2f} ms"
    )

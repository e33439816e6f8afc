"""The Batch API: a 2,000-line embeddings batch (one fresh sentence per line) in sentences per second, from
`POST /v1/batches` to `completed` with its output file written, as a fraction of raw batch-64 encoding in this
process (torch, the baseline of the embeddings phase, and the served backend itself); then the p50 of single
interactive `/v1/embeddings` requests, one at a time, idle and while a second such batch runs."""

from __future__ import annotations

import json
import statistics
import threading
import time
from typing import Any

import httpx

from bench.embeddings import RawOnnx, RawTorch, sentences, served_backend, served_threads

LINES = 2000
INTERACTIVE_IDLE = 100


def _batch_file(texts: list[str]) -> bytes:
    lines = (
        {
            "custom_id": f"s-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "all-minilm-l6-v2", "input": text},
        }
        for i, text in enumerate(texts)
    )
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _run_batch(client: httpx.Client, texts: list[str]) -> tuple[float, dict[str, Any]]:
    """Seconds from create to completed, and the finished batch."""
    upload = client.post("/v1/files", files={"file": ("bench.jsonl", _batch_file(texts))}, data={"purpose": "batch"})
    upload.raise_for_status()
    started = time.perf_counter()
    batch = client.post("/v1/batches", json={"input_file_id": upload.json()["id"], "endpoint": "/v1/embeddings"})
    batch.raise_for_status()
    batch_id = batch.json()["id"]
    while (found := client.get(f"/v1/batches/{batch_id}").json())["status"] not in ("completed", "failed"):
        time.sleep(0.05)
    return time.perf_counter() - started, found


def _interactive(client: httpx.Client, count: int | None, stop: threading.Event | None = None) -> list[float]:
    """Latencies (ms) of one-sentence requests sent one after another: `count` of them, or until `stop`."""
    latencies: list[float] = []
    for text in sentences(count or 10_000):
        if stop is not None and stop.is_set():
            break
        started = time.perf_counter()
        client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": text}).raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def run(url: str) -> dict[str, Any]:
    raw_torch = RawTorch()
    backend = served_backend()
    raw_served = None
    if backend.startswith("onnx"):
        raw_served = RawOnnx("int8" if "int8" in backend else None, served_threads())
    with httpx.Client(base_url=url, timeout=300) as client:
        _run_batch(client, sentences(100))  # warm the path
        torch_rate = raw_torch.throughput(sentences(LINES))
        served_rate = raw_served.throughput(sentences(LINES)) if raw_served is not None else torch_rate
        seconds, batch = _run_batch(client, sentences(LINES))
        assert batch["request_counts"]["completed"] == LINES, batch
        idle = _interactive(client, INTERACTIVE_IDLE)

        stop = threading.Event()
        during: list[float] = []
        prober = threading.Thread(target=lambda: during.extend(_interactive(client, None, stop)))
        prober.start()
        busy_seconds, busy = _run_batch(client, sentences(LINES))
        stop.set()
        prober.join()
    batch_rate = LINES / seconds
    return {
        "served_backend": backend,
        "lines": LINES,
        "batch_seconds": seconds,
        "batch_per_s": batch_rate,
        "raw_torch_batch64_per_s": torch_rate,
        "raw_served_batch64_per_s": served_rate,
        "vs_raw_torch": batch_rate / torch_rate,
        "vs_raw_served": batch_rate / served_rate,
        "interactive_idle_p50_ms": statistics.median(idle),
        "interactive_idle_p95_ms": statistics.quantiles(idle, n=20)[18],
        "interactive_during_p50_ms": statistics.median(during) if during else float("nan"),
        "interactive_during_p95_ms": statistics.quantiles(during, n=20)[18] if len(during) > 1 else float("nan"),
        "interactive_during_requests": len(during),
        "batch_with_interactive_per_s": LINES / busy_seconds,
        "batch_with_interactive_completed": busy["request_counts"]["completed"],
    }


def summary(result: dict[str, Any]) -> str:
    return (
        f"batch API ({result['served_backend']} served): {result['lines']}-line embeddings batch "
        f"{result['batch_per_s']:.0f} sentences/s = {result['vs_raw_torch']:.2f}x raw torch batch-64 "
        f"{result['raw_torch_batch64_per_s']:.0f}/s, {result['vs_raw_served']:.2f}x raw {result['served_backend']} "
        f"batch-64 {result['raw_served_batch64_per_s']:.0f}/s (target >= 0.9) | interactive /v1/embeddings p50 "
        f"{result['interactive_idle_p50_ms']:.1f} ms idle, {result['interactive_during_p50_ms']:.1f} ms during a "
        f"batch ({result['interactive_during_p50_ms'] / result['interactive_idle_p50_ms']:.2f}x, target <= 2x; "
        f"p95 {result['interactive_idle_p95_ms']:.1f} / {result['interactive_during_p95_ms']:.1f} ms; "
        f"{result['interactive_during_requests']} requests; that batch ran at "
        f"{result['batch_with_interactive_per_s']:.0f}/s)"
    )


if __name__ == "__main__":
    from bench.service import Service

    with Service() as service:
        print(summary(run(service.url)))

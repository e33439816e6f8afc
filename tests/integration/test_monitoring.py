"""Monitoring: /metrics in Prometheus' text format with the listed families and bounded labels, and
the WebSocket feed whose snapshots follow the traffic."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.live_server import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.api]

FAMILIES = {
    "sop_llm_http_requests",
    "sop_llm_http_request_duration_seconds",
    "sop_llm_gateway_overhead_seconds",
    "sop_llm_tokens",
    "sop_llm_provider_request_duration_seconds",
    "sop_llm_provider_calls",
    "sop_llm_provider_failures",
    "sop_llm_fallbacks",
    "sop_llm_circuit_state",
    "sop_llm_cache_hits",
    "sop_llm_cache_misses",
    "sop_llm_cache_errors",
    "sop_llm_tasks",
    "sop_llm_task_queue_depth",
    "sop_llm_model_state",
    "sop_llm_memory_rss_bytes",
    "sop_llm_active_connections",
}
SERIES_CAP = 1500
TASK_STATUSES = ("pending", "processing", "completed", "failed", "cancelled")


def _families(base_url: str) -> dict[str, list]:
    response = httpx.get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def test_metrics_parse_and_have_every_family(base_url: str) -> None:
    httpx.post(f"{base_url}/api/v1/models/generate", json={"prompt": "Hi", "max_tokens": 3, "temperature": 0})
    httpx.post(f"{base_url}/api/v1/embeddings", json={"texts": ["metrics"]})
    httpx.get(f"{base_url}/api/v1/tasks/no-such-task")
    families = _families(base_url)
    assert set(families) >= FAMILIES, FAMILIES - set(families)
    tokens = {(s.labels["model"], s.labels["direction"]): s.value for s in families["sop_llm_tokens"]}
    assert tokens[("smollm2-135m", "out")] >= 3
    overhead = [s for s in families["sop_llm_gateway_overhead_seconds"] if s.name.endswith("_count")]
    assert overhead[0].value >= 1
    states = {
        s.labels["model"] for s in families["sop_llm_model_state"] if s.value == 1 and s.labels["state"] == "ready"
    }
    assert "smollm2-135m" in states
    # Routes are whole templates, the prefix of an included router's routes included.
    routes = {s.labels["route"] for s in families["sop_llm_http_requests"]}
    assert {"/api/v1/models/generate", "/api/v1/embeddings", "/api/v1/tasks/{task_id}"} <= routes, routes
    assert "/tasks/{task_id}" not in routes


async def test_random_model_names_do_not_grow_the_series(base_url: str) -> None:
    before = sum(len(samples) for samples in _families(base_url).values())
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for start in range(0, 1000, 50):
            await asyncio.gather(
                *(
                    client.post(
                        "/v1/chat/completions",
                        json={"model": f"nope-{uuid.uuid4().hex}", "messages": [{"role": "user", "content": "x"}]},
                    )
                    if n % 2
                    else client.get(f"/v1/models/nope-{uuid.uuid4().hex}")
                    for n in range(start, start + 50)
                )
            )
    after = sum(len(samples) for samples in _families(base_url).values())
    assert after < SERIES_CAP
    assert after - before < 60  # a few new (route, status) series and histogram buckets, not one per model name


async def test_websocket_snapshots_follow_the_traffic(server: LiveServer) -> None:
    url = server.url.replace("http://", "ws://") + "/api/v1/monitoring/ws"
    async with websockets.connect(url) as socket:
        first = json.loads(await socket.recv())
        assert first["type"] == "snapshot"
        assert set(first) >= {"requests", "tokens", "memory", "active_connections", "providers", "models", "tasks"}
        assert first["active_connections"] >= 1  # this socket
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            for _ in range(5):
                await client.post(
                    "/api/v1/models/generate", json={"prompt": "Hello", "max_tokens": 4, "temperature": 0}
                )
            await client.post("/api/v1/tasks", json={"kind": "similarity", "payload": {"text1": "a", "text2": "b"}})
        # Snapshots sent while the requests ran wait in the socket, and task counts are refreshed every 2 s: read
        # on until one shows the task (at most 30 s), then check that one.
        later = [json.loads(await socket.recv())]
        async with asyncio.timeout(30):
            while sum(later[-1]["tasks"][k] for k in TASK_STATUSES) < 1 or len(later) < 3:
                later.append(json.loads(await socket.recv()))
    last = later[-1]
    assert last["requests"]["total"] >= first["requests"]["total"] + 6
    assert last["tokens"]["out"] >= first["tokens"]["out"] + 20
    assert last["requests"]["requests_last_minute"] >= 6
    assert 0 < last["requests"]["p50_ms"] <= last["requests"]["p95_ms"] <= last["requests"]["p99_ms"]
    assert last["models"]["smollm2-135m"] == "ready"
    assert last["memory"]["rss_bytes"] > 0
    assert [s["timestamp"] for s in later] == sorted(s["timestamp"] for s in later)
    assert sum(last["tasks"][k] for k in TASK_STATUSES) >= 1

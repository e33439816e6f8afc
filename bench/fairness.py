"""Fairness on the shipped default config (the repository's config/ folder), auth on, two user keys, one service:
- callers: caller A keeps 16 streamed chats of up to 256 tokens in flight (a new one whenever one ends) while caller
  B sends 10 short chats (16 tokens) one after another; B's p50 ÷ the same chats' p50 with nothing else running,
  measured first;
- interactive beside a batch: a 64-line chat-completions batch (128-token answers) through the Batch API and, once
  its lines are generating, 10 short chats one after another by the batch's own caller; their p50 ÷ the same chats'
  p50 idle. One caller for both, so the ratio shows interactive requests going before batch lines, not caller
  fairness. The batch is cancelled afterwards.
Every request at temperature 0; each part ends with the model idle.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.batching import SHIPPED_CONFIG, SHORT_CHAT
from bench.service import Service

MODEL = "smollm2-135m"
TOPICS = ["a lighthouse keeper", "a dragon who collects maps", "two rival bakers", "a robot learning to paint"]
SETTINGS = ["during a storm at sea", "in a city under the ice", "on a slow train", "in a haunted castle"]
STORIES = [f"Write a long story, with many chapters, about {t} {s}." for t in TOPICS for s in SETTINGS]
ENDED = ("completed", "failed", "cancelled", "expired")


def _admin_key(env: dict[str, str]) -> str:
    """The supported way to a first key: `sop-llm keys create` on the server's database (it prints the key last)."""
    command = [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "bench-admin", "--scope", "admin"]
    created = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return created.stdout.strip().splitlines()[-1]


def _user_key(url: str, admin: str, name: str) -> dict[str, str]:
    """A user key made by the admin over the API; the headers that send it."""
    reply = httpx.post(f"{url}/api/v1/admin/keys", json={"name": name}, headers={"Authorization": f"Bearer {admin}"})
    reply.raise_for_status()
    return {"Authorization": f"Bearer {reply.json()['key']}"}


async def _chats(client: httpx.AsyncClient, count: int) -> list[float]:
    """Latencies (ms) of `count` short chats sent one after another."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        reply = await client.post("/v1/chat/completions", json={"model": MODEL, "temperature": 0, **SHORT_CHAT})
        reply.raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def _stats(client: httpx.AsyncClient) -> dict[str, Any]:
    reply = await client.get("/api/v1/models")
    reply.raise_for_status()
    stats: dict[str, Any] = next(m for m in reply.json()["models"] if m["name"] == MODEL)["stats"]
    return stats


async def _until(done: Callable[[], Awaitable[bool]], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not await done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds:.0f} s")
        await asyncio.sleep(0.05)


async def _idle(client: httpx.AsyncClient) -> bool:
    """Whether the model runs nothing and nobody waits for it."""
    stats = await _stats(client)
    return not stats["active"] and not stats["waiting"]


def _has_content(line: str) -> bool:
    """Whether an SSE line is a chunk carrying text."""
    return line.startswith("data: {") and any(c["delta"].get("content") for c in json.loads(line[6:])["choices"])


async def _callers(a: httpx.AsyncClient, b: httpx.AsyncClient, streams: int, chats: int) -> dict[str, Any]:
    await _chats(b, 1)  # warm up
    alone = await _chats(b, chats)
    tokens = ended = 0  # A's streamed content chunks (a token each) and finished streams
    flowing = asyncio.Event()

    async def keep_streaming(i: int) -> None:
        nonlocal tokens, ended
        while True:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": STORIES[i % len(STORIES)]}],
                "max_tokens": 256,
                "temperature": 0,
                "stream": True,
            }
            async with a.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if _has_content(line):
                        tokens += 1
                        flowing.set()
            ended += 1  # the model stopped early or reached 256 tokens: start the next story
            i += streams

    senders = [asyncio.create_task(keep_streaming(i)) for i in range(streams)]
    await asyncio.wait_for(flowing.wait(), 300)
    await asyncio.sleep(1)  # every stream admitted or queued
    tokens_before, ended_before, started = tokens, ended, time.perf_counter()
    busy = await _chats(b, chats)
    seconds = time.perf_counter() - started
    for sender in senders:
        if sender.done():
            sender.result()  # a stream that failed: raise its error rather than report a lighter load
        sender.cancel()  # closing the connection stops the generation
    await asyncio.gather(*senders, return_exceptions=True)
    await _until(lambda: _idle(b), f"{MODEL} idle after the streams stopped")
    return {
        "streams": streams,
        "chats": chats,
        "alone_p50_ms": statistics.median(alone),
        "busy_p50_ms": statistics.median(busy),
        "ratio": statistics.median(busy) / statistics.median(alone),
        "a_tok_s_meanwhile": (tokens - tokens_before) / seconds,
        "a_streams_ended_meanwhile": ended - ended_before,
    }


def _batch_file(lines: int) -> bytes:
    """Chat lines asking for 128-token answers, the prompts varied."""
    rows = []
    for i in range(lines):
        messages = [{"role": "user", "content": f"Describe {TOPICS[i % 4]} {SETTINGS[i // 4 % 4]} in detail."}]
        body = {"model": MODEL, "messages": messages, "max_tokens": 128, "temperature": 0}
        rows.append({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


async def _batch(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    reply = await client.get(f"/v1/batches/{batch_id}")
    reply.raise_for_status()
    found: dict[str, Any] = reply.json()
    return found


async def _generating(client: httpx.AsyncClient) -> bool:
    return bool((await _stats(client))["active"])


async def _ended(client: httpx.AsyncClient, batch_id: str) -> bool:
    return (await _batch(client, batch_id))["status"] in ENDED


async def _beside_batch(client: httpx.AsyncClient, chats: int, lines: int) -> dict[str, Any]:
    idle = await _chats(client, chats)
    upload = await client.post(
        "/v1/files", files={"file": ("fairness.jsonl", _batch_file(lines))}, data={"purpose": "batch"}
    )
    upload.raise_for_status()
    body = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    created = await client.post("/v1/batches", json=body)
    created.raise_for_status()
    batch_id = created.json()["id"]
    await _until(lambda: _generating(client), f"batch {batch_id}'s lines generating")
    before = await _batch(client, batch_id)
    during = await _chats(client, chats)
    after = await _batch(client, batch_id)
    if after["status"] in ("validating", "in_progress"):
        (await client.post(f"/v1/batches/{batch_id}/cancel")).raise_for_status()
    await _until(lambda: _ended(client, batch_id), f"batch {batch_id} ended")
    await _until(lambda: _idle(client), f"{MODEL} idle after the batch")
    return {
        "lines": lines,
        "chats": chats,
        "idle_p50_ms": statistics.median(idle),
        "during_p50_ms": statistics.median(during),
        "ratio": statistics.median(during) / statistics.median(idle),
        "lines_answered_before": before["request_counts"]["completed"],
        "lines_answered_after": after["request_counts"]["completed"],
        "batch_running_after": after["status"] == "in_progress",
    }


async def _measure(url: str, keys: list[dict[str, str]], streams: int, chats: int, lines: int) -> dict[str, Any]:
    async with (
        httpx.AsyncClient(base_url=url, headers=keys[0], timeout=600) as a,
        httpx.AsyncClient(base_url=url, headers=keys[1], timeout=600) as b,
    ):
        return {"callers": await _callers(a, b, streams, chats), "beside_batch": await _beside_batch(b, chats, lines)}


def run(streams: int = 16, chats: int = 10, lines: int = 64) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sop-llm-bench-fairness-") as folder:
        env = {
            "CONFIG_DIR": str(SHIPPED_CONFIG),
            "AUTH_ENABLED": "true",
            "DATABASE_URL": f"sqlite+aiosqlite:///{folder}/bench.db",
            "FILES_DIR": f"{folder}/files",
        }
        admin = _admin_key(env)
        with Service(**env) as service:
            keys = [_user_key(service.url, admin, name) for name in ("caller-a", "caller-b")]
            return asyncio.run(_measure(service.url, keys, streams, chats, lines))


def summary(result: dict[str, Any]) -> str:
    c, i = result["callers"], result["beside_batch"]
    batch_state = "still running" if i["batch_running_after"] else "ENDED BEFORE THE LAST CHAT"
    return (
        f"fairness (shipped config, auth on): caller B's short chat p50 {c['busy_p50_ms']:.0f} ms while caller A keeps "
        f"{c['streams']} 256-token streams in flight vs {c['alone_p50_ms']:.0f} ms alone (x{c['ratio']:.2f}; "
        f"target <= 3; A got {c['a_tok_s_meanwhile']:.0f} tok/s meanwhile, {c['a_streams_ended_meanwhile']} of its "
        f"streams ended) | interactive short chat p50 {i['during_p50_ms']:.0f} ms beside a {i['lines']}-line chat "
        f"batch vs {i['idle_p50_ms']:.0f} ms idle (x{i['ratio']:.2f}; target <= 2; batch lines answered "
        f"{i['lines_answered_before']} -> {i['lines_answered_after']} over the {i['chats']} chats, {batch_state})"
    )


if __name__ == "__main__":
    # `python -m bench.fairness --smoke`: small counts, to check the phase runs end to end (the figures mean little).
    figures = run(streams=4, chats=3, lines=8) if "--smoke" in sys.argv else run()
    print(json.dumps(figures, indent=2))
    print(summary(figures))

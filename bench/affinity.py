"""Prefix affinity on real engines (phase "prefix affinity"): two replicas of this service, each serving the
shipped SmolLM2 entry (llama.cpp, batched scheduler, whose free slots keep their prompt's KV cache) on one thread
(LLAMA_N_THREADS=1: the two share this machine's 2 cores), auth off, behind a third replica as gateway whose models
list both as deployments through an `openai` provider entry. All on loopback.

CHATS two-turn chats, CONCURRENCY at a time, all streamed through the gateway: the first turn is a long user message
of its own (~640 tokens: the prefill dominates the first token), the second that turn's messages, the assistant's
answer as it came and a short new question. MAX_TOKENS answer tokens each, temperature 0. Run twice on the same
replicas, with new chat texts each time so that the second run finds nothing of the first in any cache: strategy
prefix_affinity, then weighted with equal weights (round robin). Each run reads
- the share of second turns answered by their first turn's replica (`X-Served-By`; target >= 95 % for affinity);
- the mean first-token time of the second turns, measured at the client (affinity ÷ round robin: target <= 0.4);
- requests per replica (target: the busiest within 1.25x of the mean);
and, from the usage the replicas report, the share of the second turns' prompt tokens taken from a cached prefix.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.service import Service

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "config"
MODEL = "smollm2-135m"
REPLICAS = ("replica-1", "replica-2")
RUNS = {"prefix_affinity": "prefix_affinity", "round_robin": "weighted"}  # gateway model -> strategy
CHATS = 50
CONCURRENCY = 4
MAX_TOKENS = 8
FACTS = 25  # ~24 tokens each: a first turn of ~640 prompt tokens (SmolLM2 tokenizer and chat template)
COLORS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple", "grey", "brown"]
THINGS = ["box", "crate", "jar", "basket", "drawer", "chest", "bag", "bottle", "tin", "bucket"]
ROOMS = ["kitchen", "attic", "cellar", "garage", "library", "office", "hall", "studio", "barn", "shed"]


def _replica_config(folder: Path) -> None:
    """The shipped SmolLM2 entry alone (its scheduler, context and threads as shipped), no embedding model."""
    shipped = yaml.safe_load((SHIPPED_CONFIG / "models.yaml").read_text())["models"][MODEL]
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": {MODEL: shipped}}))
    shutil.copy(SHIPPED_CONFIG / "providers.yaml", folder / "providers.yaml")
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")


def _gateway_config(folder: Path, replicas: dict[str, str]) -> None:
    first = next(iter(replicas.values()))
    providers = {"replica": {"type": "openai", "base_url": first, "timeout": 300}}
    models = {
        model: {
            "strategy": strategy,
            "deployments": [
                {"provider": "replica", "base_url": url, "model": MODEL, "name": f"{model}.{name}"}
                for name, url in replicas.items()
            ],
        }
        for model, strategy in RUNS.items()
    }
    (folder / "providers.yaml").write_text(yaml.safe_dump({"providers": providers}))
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")


def _first_message(run: str, chat: int) -> str:
    """A long note of its own per chat and run: nothing in it is shared with any other chat from its first word."""
    rng = random.Random(f"{run}-{chat}")
    facts = [
        f"Item {i}: the {rng.choice(COLORS)} {rng.choice(THINGS)} in the {rng.choice(ROOMS)} holds "
        f"{rng.randint(2, 99)} marbles and weighs {rng.randint(1, 40)} kg."
        for i in range(1, FACTS + 1)
    ]
    return f"Inventory {chat} of {run.replace('_', ' ')}:\n" + "\n".join(facts) + "\n\nWhich item holds most marbles?"


async def _turn(session: aiohttp.ClientSession, url: str, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """One streamed chat turn: its answer, first-token time, serving replica and usage."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = float("nan")
    text: list[str] = []
    usage: dict[str, Any] = {}
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"{model} answered {response.status}: {await response.text()}")
        served_by = response.headers.get("X-Served-By", "")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if first != first and (piece or choice.get("finish_reason")):
                    first = time.perf_counter() - started
                text.append(piece)
            usage = event.get("usage") or usage
    details = usage.get("prompt_tokens_details") or {}
    return {
        "first_token_s": first,
        "answer": "".join(text),
        "served_by": served_by.rsplit(".", 1)[-1],
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "cached_tokens": int(details.get("cached_tokens") or 0),
    }


async def _chat(session: aiohttp.ClientSession, url: str, model: str, run: str, chat: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": _first_message(run, chat)}]
    first = await _turn(session, url, model, messages)
    messages += [
        {"role": "assistant", "content": first["answer"]},
        {"role": "user", "content": "And which item weighs least?"},
    ]
    second = await _turn(session, url, model, messages)
    return {"first": first, "second": second}


async def _run(session: aiohttp.ClientSession, url: str, model: str) -> dict[str, Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated(chat: int) -> dict[str, Any]:
        async with gate:
            return await _chat(session, url, model, model, chat)

    started = time.perf_counter()
    chats = await asyncio.gather(*(gated(i) for i in range(CHATS)))
    seconds = time.perf_counter() - started
    seconds_second = [c["second"]["first_token_s"] for c in chats]
    per_node = Counter(turn["served_by"] for c in chats for turn in (c["first"], c["second"]))
    mean_load = sum(per_node.values()) / len(REPLICAS)
    second_prompt = sum(c["second"]["prompt_tokens"] for c in chats)
    return {
        "chats": CHATS,
        "seconds": seconds,
        "same_node_share": sum(c["first"]["served_by"] == c["second"]["served_by"] for c in chats) / CHATS,
        "second_first_token_mean_ms": statistics.mean(seconds_second) * 1000,
        "second_first_token_p50_ms": statistics.median(seconds_second) * 1000,
        "first_first_token_mean_ms": statistics.mean(c["first"]["first_token_s"] for c in chats) * 1000,
        "first_prompt_tokens_mean": statistics.mean(c["first"]["prompt_tokens"] for c in chats),
        "second_cached_share": sum(c["second"]["cached_tokens"] for c in chats) / second_prompt if second_prompt else 0,
        "requests_per_node": {name: per_node.get(name, 0) for name in REPLICAS},
        "busiest_vs_mean": max(per_node.get(name, 0) for name in REPLICAS) / mean_load,
    }


async def _measure(gateway: str, replicas: dict[str, str]) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for url in replicas.values():  # warm up each engine once, directly
            for _ in range(2):
                await _turn(session, url.removesuffix("/v1"), MODEL, [{"role": "user", "content": "Say hello."}])
        return {model: await _run(session, gateway, model) for model in RUNS}


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sop-llm-bench-affinity-") as folder, ExitStack() as stack:
        replicas: dict[str, str] = {}
        for name in REPLICAS:
            config = Path(folder) / name
            config.mkdir()
            _replica_config(config)
            env = {
                "CONFIG_DIR": str(config),
                "AUTH_ENABLED": "false",
                "LLAMA_N_THREADS": "1",
                "DATABASE_URL": f"sqlite+aiosqlite:///{config}/bench.db",
            }
            replicas[name] = f"{stack.enter_context(Service(**env)).url}/v1"
        config = Path(folder) / "gateway"
        config.mkdir()
        _gateway_config(config, replicas)
        env = {"CONFIG_DIR": str(config), "AUTH_ENABLED": "false", "DATABASE_URL": f"sqlite+aiosqlite:///{config}/g.db"}
        gateway = stack.enter_context(Service(**env))
        runs = asyncio.run(_measure(gateway.url, replicas))
    affinity, rr = runs["prefix_affinity"], runs["round_robin"]
    return {
        **runs,
        "concurrency": CONCURRENCY,
        "max_tokens": MAX_TOKENS,
        "second_first_token_ratio": affinity["second_first_token_mean_ms"] / rr["second_first_token_mean_ms"],
    }


def _mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def summary(result: dict[str, Any]) -> str:
    a, rr, ratio = result["prefix_affinity"], result["round_robin"], result["second_first_token_ratio"]
    loads = "/".join(str(n) for n in a["requests_per_node"].values())
    rr_loads = "/".join(str(n) for n in rr["requests_per_node"].values())
    return (
        f"prefix affinity (2 replicas of SmolLM2 on 1 thread each behind a gateway replica; {a['chats']} two-turn "
        f"chats, ~{a['first_prompt_tokens_mean']:.0f}-token first turns, {result['concurrency']} at a time, "
        f"streamed): second turns on their first turn's replica {a['same_node_share']:.0%} (target >= 95 %) "
        f"{_mark(a['same_node_share'] >= 0.95)} vs {rr['same_node_share']:.0%} round robin | second-turn first "
        f"token {a['second_first_token_mean_ms']:.0f} ms mean vs {rr['second_first_token_mean_ms']:.0f} ms round "
        f"robin = {ratio:.0%} (target <= 40 %) {_mark(ratio <= 0.4)}; prompt tokens from cache "
        f"{a['second_cached_share']:.0%} vs {rr['second_cached_share']:.0%} | requests per replica {loads} (busiest "
        f"{a['busiest_vs_mean']:.2f}x the mean; target <= 1.25) {_mark(a['busiest_vs_mean'] <= 1.25)}; round robin "
        f"{rr_loads}"
    )


if __name__ == "__main__":
    figures = run()
    json.dump(figures, sys.stdout, indent=2)
    print()
    print(summary(figures))

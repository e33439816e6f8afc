"""Several deployments of one model (phase "routing"): the service as a gateway over three simulated nodes that
differ in capacity and speed (bench/sim_node.py, each its own process, loopback only):

    node-a: 4 requests at once, 20 ms to the first token, 2 ms per token -> 120 ms a request, 33.3 requests/s
    node-b: 2 at once, 30 ms, 3 ms per token                             -> 180 ms,              11.1 requests/s
    node-c: 1 at once, 50 ms, 5 ms per token                             -> 300 ms,               3.3 requests/s

at MAX_TOKENS = 50 output tokens a request: 47.8 requests/s in all. One gateway (no local model, auth off) has one
model per strategy over the same three nodes — least_outstanding, latency and weighted with equal weights, i.e.
round robin — and each gets the same open-loop load (Poisson arrivals, seeded) at 80 % of the nodes' capacity for
SECONDS; p50/p99 latency per strategy. Round robin gives node-c a third of the requests, ~3.8x what it can serve:
its queue grows for the whole run, and what is still unanswered DRAIN_SECONDS after the last arrival is cancelled
and counted with its wait so far (its p99 is then a lower bound, printed with >=).

Then, on least_outstanding at the same load, node-b is killed (SIGKILL) KILL_AT s into the run and started again on
its port RESTART_AFTER s later: requests that failed (target 0: a request whose node refuses or resets the
connection before answering goes to another node) and the seconds from the restart until node-b's own request
counter moves (target <= 10 s). The gateway runs with the circuit settings in GATEWAY_ENV.

Last, the gateway's added latency: one request at a time to a fourth node that does no work, directly and through
a model with three deployments on it (and through a model with one, for comparison), taking turns request by
request in blocks; the median over the blocks of the gateway's p50 minus the direct p50 (target: <= 1 ms).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import yaml

from bench import open_loop
from bench.service import Service
from bench.sim_node import MODEL, NodeSpec, SimNode

NODES = (
    NodeSpec("node-a", capacity=4, per_token_ms=2.0, ttft_ms=20.0),
    NodeSpec("node-b", capacity=2, per_token_ms=3.0, ttft_ms=30.0),
    NodeSpec("node-c", capacity=1, per_token_ms=5.0, ttft_ms=50.0),
)
IDLE_NODE = NodeSpec("node-zero", capacity=64, per_token_ms=0.0, ttft_ms=0.0)
MAX_TOKENS = 50
LOAD = 0.8
SECONDS = 40.0
DRAIN_SECONDS = 10.0
STRATEGIES = {"least_outstanding": "least_outstanding", "latency": "latency", "round_robin": "weighted"}
KILLED = "node-b"
KILL_AT = 6.0
RESTART_AFTER = 8.0
RECOVERY_WINDOW = 15.0  # the load goes on this long after the restart
# The shipped cool-down is 30 s: a node back sooner gets traffic only when its breaker lets a probe through, so
# the recovery figure is bounded by this setting, not by the router.
GATEWAY_ENV = {"CIRCUIT_FAILURE_THRESHOLD": "5", "CIRCUIT_COOLDOWN_SECONDS": "5", "HEALTH_CHECK_INTERVAL": "5"}
C1_BLOCKS = 10
C1_PER_BLOCK = 150
BODY = {"messages": [{"role": "user", "content": "Summarise the routing benchmark in one line."}]}


def capacity_per_s() -> float:
    return sum(spec.requests_per_s(MAX_TOKENS) for spec in NODES)


def _deployments(model: str, urls: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"provider": "node", "base_url": url, "model": MODEL, "name": f"{model}.{node}"} for node, url in urls.items()
    ]


def _config(folder: Path, nodes: dict[str, SimNode], idle: SimNode) -> None:
    urls = {name: node.url for name, node in nodes.items()}
    models: dict[str, Any] = {
        model: {"strategy": strategy, "deployments": _deployments(model, urls)}
        for model, strategy in STRATEGIES.items()
    }
    models["three_idle"] = {
        "deployments": [
            {"provider": "node", "base_url": idle.url, "model": MODEL, "name": f"three_idle.{i}"} for i in (1, 2, 3)
        ]
    }
    models["one_idle"] = {"provider": "idle", "model": MODEL}
    # Every provider entry points at a node on loopback (a deployment's base_url overrides its entry's).
    providers = {"node": {"type": "openai", "base_url": idle.url}, "idle": {"type": "openai", "base_url": idle.url}}
    (folder / "providers.yaml").write_text(yaml.safe_dump({"providers": providers}))
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")


def _node_of(served_by: str) -> str:
    return served_by.rsplit(".", 1)[-1] if served_by else "?"


async def _settle(nodes: dict[str, SimNode], client: httpx.AsyncClient, seconds: float = 60) -> None:
    """Until no node works on or queues a request (cancelled ones included)."""
    deadline = time.monotonic() + seconds
    while True:
        stats = [await node.astats(client) for node in nodes.values()]
        if not any(s["active"] or s["waiting"] for s in stats):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nodes still busy {seconds:.0f} s after the run: {stats}")
        await asyncio.sleep(0.1)


async def _received(nodes: dict[str, SimNode], client: httpx.AsyncClient) -> dict[str, int]:
    return {name: (await node.astats(client))["received"] for name, node in nodes.items()}


async def _providers(client: httpx.AsyncClient, gateway: str, model: str) -> list[dict[str, Any]]:
    """The gateway's own view of the model's deployments (GET /api/v1/providers)."""
    reply = await client.get(f"{gateway}/api/v1/providers")
    reply.raise_for_status()
    listed = reply.json()
    entries = listed.get("providers", listed) if isinstance(listed, dict) else listed
    return [
        {k: entry.get(k) for k in ("name", "state", "load", "stats", "circuit")}
        for entry in entries
        if entry.get("model") == model
    ]


async def _strategy(
    session: aiohttp.ClientSession,
    client: httpx.AsyncClient,
    gateway: str,
    nodes: dict[str, SimNode],
    model: str,
    seed: int,
) -> dict[str, Any]:
    before = await _received(nodes, client)
    body = {"model": model, **BODY, "max_tokens": MAX_TOKENS}
    rate = LOAD * capacity_per_s()
    samples, lag = await open_loop.poisson(
        session, f"{gateway}/v1/chat/completions", body, rate, SECONDS, seed, DRAIN_SECONDS
    )
    providers = await _providers(client, gateway, model)
    await _settle(nodes, client)
    after = await _received(nodes, client)
    result = open_loop.figures(samples, lag).as_dict()
    result["served_by"] = dict(Counter(_node_of(s.served_by) for s in samples if s.status == 200))
    result["received_by_node"] = {name: after[name] - before[name] for name in nodes}
    result["gateway_view"] = providers
    return result


async def _killed_mid_run(
    session: aiohttp.ClientSession, client: httpx.AsyncClient, gateway: str, nodes: dict[str, SimNode]
) -> dict[str, Any]:
    model = "least_outstanding"
    node = nodes[KILLED]
    body = {"model": model, **BODY, "max_tokens": MAX_TOKENS}
    seconds = KILL_AT + RESTART_AFTER + RECOVERY_WINDOW
    load = asyncio.create_task(
        open_loop.poisson(
            session, f"{gateway}/v1/chat/completions", body, LOAD * capacity_per_s(), seconds, 7, DRAIN_SECONDS
        )
    )
    await asyncio.sleep(KILL_AT)
    received_before_kill = (await node.astats(client))["received"]
    await asyncio.to_thread(node.kill)
    killed = time.monotonic()
    await asyncio.sleep(RESTART_AFTER)
    await asyncio.to_thread(node.start)  # returns once the node answers on its port again
    restarted = time.monotonic()
    recovered: float | None = None
    while recovered is None and not load.done():
        if (await node.astats(client))["received"] > 0:
            recovered = time.monotonic() - restarted
        else:
            await asyncio.sleep(0.05)
    samples, lag = await load
    await _settle(nodes, client)
    result = open_loop.figures(samples, lag).as_dict()
    errors = Counter(s.error[:120] for s in samples if s.status not in (200, open_loop.UNFINISHED))
    during = [s for s in samples if KILL_AT <= s.sent <= KILL_AT + RESTART_AFTER]
    result.update(
        {
            "killed": KILLED,
            "received_before_kill": received_before_kill,
            "down_seconds": restarted - killed,
            "recovery_s": recovered,
            "failed_during_outage": sum(s.status not in (200, open_loop.UNFINISHED) for s in during),
            "errors": dict(errors.most_common(5)),
            "served_by": dict(Counter(_node_of(s.served_by) for s in samples if s.status == 200)),
            "gateway_view": await _providers(client, gateway, model),
        }
    )
    return result


async def _added_latency(session: aiohttp.ClientSession, gateway: str, idle: SimNode) -> dict[str, Any]:
    """One request at a time, to each target in turn, in C1_BLOCKS blocks: the medians over the blocks of each
    block's p50s, so that a spell of a slower machine (this one's speed drifts by up to 2x for seconds) moves
    neither figure."""
    targets = {
        "direct": (f"{idle.url}/chat/completions", MODEL),
        "one_deployment": (f"{gateway}/v1/chat/completions", "one_idle"),
        "three_deployments": (f"{gateway}/v1/chat/completions", "three_idle"),
    }
    blocks: dict[str, list[float]] = {name: [] for name in targets}
    for block in range(-1, C1_BLOCKS):  # block -1 warms up connections and code paths
        latencies: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(C1_PER_BLOCK):
            for name, (url, model) in targets.items():
                started = time.perf_counter()
                async with session.post(url, json={"model": model, **BODY, "max_tokens": 16}) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
                latencies[name].append((time.perf_counter() - started) * 1000)
        if block >= 0:
            for name, values in latencies.items():
                blocks[name].append(statistics.median(values))
    p50 = {name: statistics.median(values) for name, values in blocks.items()}
    added = [three - direct for three, direct in zip(blocks["three_deployments"], blocks["direct"], strict=True)]
    added_one = [one - direct for one, direct in zip(blocks["one_deployment"], blocks["direct"], strict=True)]
    return {
        "requests": C1_BLOCKS * C1_PER_BLOCK,
        "p50_ms": p50,
        "block_p50_ms": blocks,
        "added_p50_ms": statistics.median(added),
        "added_p50_one_deployment_ms": statistics.median(added_one),
    }


async def _measure(gateway: str, nodes: dict[str, SimNode], idle: SimNode) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session,
        httpx.AsyncClient(timeout=10) as client,
    ):
        added = await _added_latency(session, gateway, idle)
        strategies = {}
        for seed, model in enumerate(("least_outstanding", "latency")):
            strategies[model] = await _strategy(session, client, gateway, nodes, model, seed)
        killed = await _killed_mid_run(session, client, gateway, nodes)
        # Round robin last: node-c's backlog is cancelled at the cut-off, and nothing after it uses those nodes.
        strategies["round_robin"] = await _strategy(session, client, gateway, nodes, "round_robin", 2)
    return {"strategies": strategies, "node_killed": killed, "gateway_overhead": added}


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sop-llm-bench-routing-") as folder, ExitStack() as stack:
        nodes = {spec.name: stack.enter_context(SimNode(spec)) for spec in NODES}
        idle = stack.enter_context(SimNode(IDLE_NODE))
        _config(Path(folder), nodes, idle)
        env = {
            "CONFIG_DIR": folder,
            "AUTH_ENABLED": "false",
            "DATABASE_URL": f"sqlite+aiosqlite:///{folder}/bench.db",
            "LOG_LEVEL": "ERROR",  # the killed node's refused connections are expected here
            **GATEWAY_ENV,
        }
        gateway = stack.enter_context(Service(**env))
        measured = asyncio.run(_measure(gateway.url, nodes, idle))
    return {
        "nodes": [vars(spec) | {"requests_per_s": spec.requests_per_s(MAX_TOKENS)} for spec in NODES],
        "max_tokens": MAX_TOKENS,
        "capacity_per_s": capacity_per_s(),
        "rate_per_s": LOAD * capacity_per_s(),
        "seconds": SECONDS,
        "gateway_env": GATEWAY_ENV,
        **measured,
    }


def _mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def _p99(figures: dict[str, Any]) -> str:
    return f"{'>=' if figures['p99_lower_bound'] else ''}{figures['p99_ms']:.0f}"


def summary(result: dict[str, Any]) -> str:
    s = result["strategies"]
    lo, lat, rr = s["least_outstanding"], s["latency"], s["round_robin"]
    lo_vs_rr = lo["p99_ms"] / rr["p99_ms"]
    lat_vs_lo = lat["p99_ms"] / lo["p99_ms"]
    k, o = result["node_killed"], result["gateway_overhead"]
    recovery = k["recovery_s"]
    recovery_text = f"{recovery:.1f} s" if recovery is not None else f"not within {RECOVERY_WINDOW:.0f} s"
    per = " | ".join(
        f"{name} p50 {f['p50_ms']:.0f} ms p99 {_p99(f)} ms ({f['requests']} requests, "
        f"{f['failed']} failed, {f['unfinished']} cut off)"
        for name, f in s.items()
    )
    return (
        f"routing (3 sim nodes, capacity 4/2/1 at 2/3/5 ms a token, {result['max_tokens']}-token answers: "
        f"{result['capacity_per_s']:.1f} requests/s in all; Poisson {result['rate_per_s']:.1f}/s for "
        f"{result['seconds']:.0f} s per strategy): {per} | least_outstanding p99 = {lo_vs_rr:.2f}x round robin's "
        f"(target <= 0.5) {_mark(lo_vs_rr <= 0.5)} | latency p99 = {lat_vs_lo:.2f}x least_outstanding's "
        f"(target <= 1.2) {_mark(lat_vs_lo <= 1.2)} | {k['killed']} killed mid-run: {k['failed']} of "
        f"{k['requests']} requests failed (target 0) {_mark(k['failed'] == 0)}, traffic back {recovery_text} after "
        f"its restart (target <= 10 s) {_mark(recovery is not None and recovery <= 10)} | added p50 at c1 through "
        f"3 deployments {o['added_p50_ms']:.2f} ms (target <= 1 ms) {_mark(o['added_p50_ms'] <= 1)}, through one "
        f"{o['added_p50_one_deployment_ms']:.2f} ms (direct to the node: p50 {o['p50_ms']['direct']:.2f} ms)"
    )


if __name__ == "__main__":
    figures = run()
    json.dump(figures, sys.stdout, indent=2)
    print()
    print(summary(figures))

"""The request log and OpenTelemetry (phase "request log"): what they cost a gateway request, and how fast the logs
page's searches answer on a large log.

- Throughput at 64 connections (wrk, POST /v1/chat/completions through the service to gateway.py's static mock
  upstream, auth on, as the gateway phase runs it) of three service processes started at once, in alternating
  rounds: REQUEST_LOG=off, REQUEST_LOG=metadata (the default) and the default with traces exported over OTLP/HTTP to
  a loopback receiver (otlp_sink.py); 16 rounds of 4 s runs, every other round in the reverse order. Each ratio is
  the median over the rounds of the ratio within a round (the two runs compared are seconds apart): the machine's
  own speed drifts by more than the differences measured, and pairing the runs cancels most of that drift, the
  alternating order the rest of a steady drift; many short rounds make the median steadier than a few long ones.
  Targets: the request log >= 95 % of off; tracing >= 85 % of tracing off (the default); the receiver must have
  got spans. Beside each ratio, the same for the services' CPU time per
  request (all threads, the database's included): a second view, for reading only.
- Search: a throw-away database on the local PostgreSQL (POSTGRES: 127.0.0.1:5432, user postgres, trust), migrated,
  ROWS synthetic entries loaded by COPY in arrival order (200 keys and 10 models with a few heavy ones, mostly 200
  with some 4xx/5xx, over the last 30 days), analysed; the service started on it with auth on times the logs page's
  searches over HTTP with an admin key, REPEATS times each: `GET /api/v1/logs` with no filter, one key, one model,
  status=error, status=5xx, key + model + a week, and the second page by the first's `next`. Target: every search's
  p95 <= 300 ms. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench.gateway import mock_upstream, service, wrk
from bench.service import Service, free_port

CONNECTIONS = 64
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
ROWS = 1_000_000
CHUNK = 100_000
REPEATS = 20
DAYS = 30
SEARCH_TARGET_MS = 300.0
COLUMNS = (
    "at",
    "subject",
    "surface",
    "method",
    "route",
    "model",
    "served_by",
    "status",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "first_token_ms",
    "trace_id",
)
MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "claude-sonnet",
    "claude-haiku",
    "llama-3.1-8b",
    "qwen2.5-7b",
    "smollm2-135m",
    "mistral-7b",
    "all-minilm-l6-v2",
    "bge-small",
]
ROUTES = {  # surface -> (share, routes)
    "openai": (0.6, ["/v1/chat/completions", "/v1/chat/completions", "/v1/responses", "/v1/embeddings"]),
    "anthropic": (0.15, ["/v1/messages"]),
    "ollama": (0.1, ["/api/chat", "/api/generate"]),
    "native": (0.15, ["/api/v1/tasks", "/api/v1/embeddings"]),
}
STATUSES = {200: 0.94, 400: 0.015, 401: 0.01, 429: 0.02, 500: 0.01, 503: 0.005}
ERROR_CODES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_exceeded",
    500: "internal_error",
    503: "overloaded",
}


# -- throughput --------------------------------------------------------------------------------------------------


@contextmanager
def otlp_sink() -> Iterator[str]:
    """otlp_sink.py as its own process; yields its base URL (the OTLP endpoint, and /stats)."""
    port = free_port()
    command = [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/stats", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the OTLP sink did not come up") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _sink_stats(sink: str, wait_s: float = 0.0) -> dict[str, int]:
    """The sink's counts; with `wait_s`, waits up to that long for a first export (the SDK batches every ~5 s)."""
    deadline = time.monotonic() + wait_s
    while True:
        counts: dict[str, int] = httpx.get(f"{sink}/stats", timeout=5).json()
        if counts["requests"] or time.monotonic() >= deadline:
            return counts
        time.sleep(0.25)


def _logged_rows(database: Path) -> int | None:
    """Rows in a service's SQLite request log after it stopped (None: no request_log table there)."""
    with closing(sqlite3.connect(database)) as connection:
        try:
            return int(connection.execute("SELECT count(*) FROM request_log").fetchone()[0])
        except sqlite3.OperationalError:
            return None


def _listener(url: str) -> psutil.Process:
    """The process listening on the URL's port: the service (gateway.service() hands out only its URL)."""
    port = httpx.URL(url).port
    for connection in psutil.net_connections("tcp"):
        address = connection.laddr
        if connection.status == psutil.CONN_LISTEN and address and address.port == port and connection.pid:
            return psutil.Process(connection.pid)
    raise RuntimeError(f"nothing listens on {url}")


def _measured(url: str, headers: dict[str, str], seconds: int, process: psutil.Process) -> dict[str, float]:
    """wrk's figures and the service's CPU time per request (all its threads, the span exporter's and the
    database's included)."""
    before = process.cpu_times()
    figures = wrk(url, CONNECTIONS, seconds, headers)
    after = process.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {**figures, "cpu_us_per_request": cpu / (figures["rps"] * seconds) * 1e6}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {metric: statistics.median(run[metric] for run in runs) for metric in runs[0]}


def _paired(runs: list[dict[str, float]], against: list[dict[str, float]], metric: str) -> float:
    """The median over the rounds of runs[i] / against[i] (for CPU time, inverted: less is faster)."""
    if metric == "cpu_us_per_request":
        return statistics.median(b[metric] / a[metric] for a, b in zip(runs, against, strict=True))
    return statistics.median(a[metric] / b[metric] for a, b in zip(runs, against, strict=True))


def throughput(seconds: int = 4, rounds: int = 16) -> dict[str, Any]:
    """Three service processes at once (request log off, on, on with tracing), wrk rounds alternating between them."""
    samples: dict[str, list[dict[str, float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="sop-llm-bench-log-") as folder,
        mock_upstream() as upstream,
        otlp_sink() as sink,
    ):
        variants = {
            "off": {"REQUEST_LOG": "off"},
            "metadata": {"REQUEST_LOG": "metadata"},
            "tracing": {"REQUEST_LOG": "metadata", "OTEL_EXPORTER_OTLP_ENDPOINT": sink},
        }
        databases = {name: Path(folder) / f"{name}.db" for name in variants}
        with ExitStack() as stack:
            targets = {
                name: stack.enter_context(
                    service(upstream, {**env, "DATABASE_URL": f"sqlite+aiosqlite:///{databases[name]}"})
                )
                for name, env in variants.items()
            }
            processes = {name: _listener(url) for name, (url, _) in targets.items()}
            for url, headers in targets.values():
                wrk(url, CONNECTIONS, 1, headers)  # warm up connections and code paths
            for round_ in range(rounds):
                # Every other round runs the other way round: a drift in the machine's speed within a round then
                # favours no variant.
                names = list(targets) if round_ % 2 == 0 else list(reversed(targets))
                for name in names:
                    url, headers = targets[name]
                    samples.setdefault(name, []).append(_measured(url, headers, seconds, processes[name]))
        # After the services stopped: each flushed what its request log and its span queue still held.
        rows = {name: _logged_rows(path) for name, path in databases.items()}
        spans = _sink_stats(sink, wait_s=10)
    results: dict[str, Any] = {name: _median(runs) for name, runs in samples.items()}
    return {
        **results,
        "seconds": seconds,
        "rounds": rounds,
        "connections": CONNECTIONS,
        "rps_rounds": {name: [run["rps"] for run in runs] for name, runs in samples.items()},
        "cpu_us_rounds": {name: [round(run["cpu_us_per_request"]) for run in runs] for name, runs in samples.items()},
        "logged_rows": rows,
        "otlp": spans,
        "metadata_vs_off": _paired(samples["metadata"], samples["off"], "rps"),
        "tracing_vs_metadata": _paired(samples["tracing"], samples["metadata"], "rps"),
        # CPU time per request, inverted: the throughput ratio if the service were bound by its own CPU time alone.
        "metadata_vs_off_cpu": _paired(samples["metadata"], samples["off"], "cpu_us_per_request"),
        "tracing_vs_metadata_cpu": _paired(samples["tracing"], samples["metadata"], "cpu_us_per_request"),
    }


# -- search ------------------------------------------------------------------------------------------------------


def _weights(count: int, skew: float) -> list[float]:
    """Zipf-like shares: a few heavy callers or models, a long tail."""
    return [1 / (rank + 1) ** skew for rank in range(count)]


class Synthetic:
    """ROWS entries in arrival order (ids grow with time, as a real log's do), made CHUNK rows at a time."""

    def __init__(self, rows: int, now: datetime, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.rows = rows
        self.start = now - timedelta(days=DAYS)
        self.subjects = [f"key:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}" for _ in range(200)]
        self.subject_weights = _weights(len(self.subjects), 0.9)
        self.model_weights = _weights(len(MODELS), 0.7)

    def chunks(self) -> Iterator[list[tuple[Any, ...]]]:
        rng = self.rng
        span = DAYS * 86400.0
        offsets = sorted(rng.random() * span for _ in range(self.rows))
        surfaces = list(ROUTES)
        for first in range(0, self.rows, CHUNK):
            part = offsets[first : first + CHUNK]
            n = len(part)
            subjects = rng.choices(self.subjects, self.subject_weights, k=n)
            models = rng.choices(MODELS, self.model_weights, k=n)
            surface_of = rng.choices(surfaces, [share for share, _ in ROUTES.values()], k=n)
            statuses = rng.choices(list(STATUSES), list(STATUSES.values()), k=n)
            chunk: list[tuple[Any, ...]] = []
            for i in range(n):
                status, surface, subject = statuses[i], surface_of[i], subjects[i]
                model: str | None = models[i]
                route, method = rng.choice(ROUTES[surface][1]), "POST"
                if rng.random() < 0.02:
                    route, method, model = "/v1/models", "GET", None
                if status == 401:
                    subject, model = "anonymous", None
                ok = status < 400 and model is not None
                latency = rng.lognormvariate(6.2, 0.9) if ok else rng.lognormvariate(2.5, 1.0)
                stream = ok and rng.random() < 0.3
                chunk.append(
                    (
                        self.start + timedelta(seconds=part[i]),
                        subject,
                        surface,
                        method,
                        route,
                        model,
                        f"{model}.node-{rng.randrange(3)}" if ok else None,
                        status,
                        ERROR_CODES.get(status),
                        int(rng.lognormvariate(5.5, 1.0)) if ok else 0,
                        int(rng.lognormvariate(4.5, 1.0)) if ok else 0,
                        latency,
                        latency * rng.uniform(0.05, 0.3) if stream else None,
                        f"{rng.getrandbits(128):032x}",
                    )
                )
            yield chunk


async def _load(database: str, data: Synthetic) -> dict[str, float]:
    connection = await asyncpg.connect(f"{POSTGRES}/{database}")
    try:
        started = time.perf_counter()
        for chunk in data.chunks():
            await connection.copy_records_to_table("request_log", records=chunk, columns=COLUMNS)
        loaded = time.perf_counter() - started
        await connection.execute("ANALYZE request_log")
        analysed = time.perf_counter() - started - loaded
        size = await connection.fetchval("SELECT pg_total_relation_size('request_log')")
    finally:
        await connection.close()
    return {"load_s": loaded, "analyze_s": analysed, "table_mb": size / 2**20}


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(f"{POSTGRES}/postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped on the way out."""
    name = f"bench_request_log_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def _searches(data: Synthetic, now: datetime) -> dict[str, dict[str, str]]:
    """The logs page's searches: the heaviest caller and the fifth model, so the filters meet thousands of rows."""
    subject, model = data.subjects[0], MODELS[4]
    week = {"from": (now - timedelta(days=20)).isoformat(), "to": (now - timedelta(days=13)).isoformat()}
    return {
        "no filter": {},
        "subject": {"subject": subject},
        "model": {"model": model},
        "status=error": {"status": "error"},
        "status=5xx": {"status": "5xx"},
        "subject+model+week": {"subject": subject, "model": model, **week},
    }


def _time_searches(url: str, key: str, searches: dict[str, dict[str, str]], repeats: int) -> dict[str, Any]:
    with httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:

        def get(params: dict[str, str]) -> tuple[float, dict[str, Any]]:
            started = time.perf_counter()
            response = client.get("/logs", params=params)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"GET /api/v1/logs {params} answered {response.status_code}: {response.text}")
            return elapsed, response.json()

        cursor = get({})[1]["next"]
        if cursor is None:
            raise RuntimeError("the first page of the request log has no `next`")
        searches = {**searches, "second page": {"before": cursor}}
        found: dict[str, int] = {}
        for name, params in searches.items():  # warm up: plans, caches, connections
            for _ in range(2):
                found[name] = len(get(params)[1]["data"])
        times: dict[str, list[float]] = {name: [] for name in searches}
        for _ in range(repeats):  # round robin, so that a busy moment hits every search alike
            for name, params in searches.items():
                times[name].append(get(params)[0])
    return {
        name: {
            "params": searches[name],
            "rows": found[name],
            "p50_ms": statistics.median(samples),
            "p95_ms": _percentile(samples, 0.95),
            "max_ms": max(samples),
        }
        for name, samples in times.items()
    }


def _create_key(env: dict[str, str]) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "bench-admin", "--scope", "admin"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


def search(rows: int = ROWS, repeats: int = REPEATS) -> dict[str, Any]:
    from sop_llm.migrations import upgrade

    now = datetime.now(UTC)
    data = Synthetic(rows, now)
    with scratch_database() as database, tempfile.TemporaryDirectory(prefix="sop-llm-bench-logs-") as folder:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        upgrade(url)
        loaded = asyncio.run(_load(database, data))
        config = Path(folder)
        (config / "providers.yaml").write_text("providers: {}\n")
        (config / "models.yaml").write_text("models: {}\n")
        (config / "embeddings.yaml").write_text("embeddings: {}\n")
        env = {
            "CONFIG_DIR": folder,
            "AUTH_ENABLED": "true",
            "DATABASE_URL": url,
            "REQUEST_LOG_RETENTION_DAYS": "365",  # no pruning of the oldest synthetic rows while searching
        }
        key = _create_key(env)
        with Service(**env) as running:
            timed = _time_searches(running.url, key, _searches(data, now), repeats)
    worst = max(timed, key=lambda name: timed[name]["p95_ms"])
    return {
        "rows": rows,
        "repeats": repeats,
        **loaded,
        "searches": timed,
        "worst": worst,
        "worst_p95_ms": timed[worst]["p95_ms"],
        "worst_p50_ms": max(s["p50_ms"] for s in timed.values()),
    }


# -- the phase ---------------------------------------------------------------------------------------------------


def run(seconds: int = 4, rounds: int = 16, rows: int = ROWS, repeats: int = REPEATS) -> dict[str, Any]:
    return {"throughput": throughput(seconds, rounds), "search": search(rows, repeats)}


def _mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def summary(result: dict[str, Any]) -> str:
    t, s = result["throughput"], result["search"]
    off, meta, traced = t["off"], t["metadata"], t["tracing"]
    sink, traced_rows = t["otlp"], t["logged_rows"]["tracing"] or 0
    spans_per_request = f"{sink['spans'] / traced_rows:.2f}" if traced_rows else "?"
    traced_ok = t["tracing_vs_metadata"] >= 0.85 and sink["spans"] > 0
    setup = (
        f"c{t['connections']}, {t['rounds']} rounds of {t['seconds']} s, ratios within each round, their median; "
        "static mock upstream, auth on"
    )
    per_search = " | ".join(
        f"{name} p50 {f['p50_ms']:.0f} / p95 {f['p95_ms']:.0f} / max {f['max_ms']:.0f} ms"
        for name, f in s["searches"].items()
    )
    return "\n".join(
        [
            f"request log ({setup}): REQUEST_LOG=metadata {meta['rps']:.0f}/s vs off {off['rps']:.0f}/s (medians) = "
            f"{t['metadata_vs_off']:.1%} (target >= 95 %) {_mark(t['metadata_vs_off'] >= 0.95)}; service CPU "
            f"{meta['cpu_us_per_request']:.0f} vs {off['cpu_us_per_request']:.0f} µs a request "
            f"(= {t['metadata_vs_off_cpu']:.1%}); {t['logged_rows']['metadata']} rows logged",
            f"request log: OpenTelemetry traces over OTLP/HTTP to a loopback receiver {traced['rps']:.0f}/s vs tracing "
            f"off (REQUEST_LOG=metadata, the default) {meta['rps']:.0f}/s = {t['tracing_vs_metadata']:.1%} (target "
            f">= 85 %; spans must arrive: {sink['spans']} spans, {spans_per_request} a request, in {sink['requests']} "
            f"exports of {sink['bytes'] / 2**20:.1f} MB) {_mark(traced_ok)}; service CPU "
            f"{traced['cpu_us_per_request']:.0f} vs {meta['cpu_us_per_request']:.0f} µs a request "
            f"(= {t['tracing_vs_metadata_cpu']:.1%})",
            f"request log search (PostgreSQL, {s['rows']:,} rows, {s['table_mb']:.0f} MB, loaded in "
            f"{s['load_s']:.0f} s; GET /api/v1/logs {s['repeats']} times each): {per_search} | worst p95 "
            f"{s['worst_p95_ms']:.0f} ms ({s['worst']}; target <= {SEARCH_TARGET_MS:.0f} ms) "
            f"{_mark(s['worst_p95_ms'] <= SEARCH_TARGET_MS)}, worst p50 {s['worst_p50_ms']:.0f} ms",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="the request-log phase alone")
    parser.add_argument("--seconds", type=int, default=4, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--rows", type=int, default=ROWS, help="synthetic request-log rows for the search part")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="times each search is timed")
    args = parser.parse_args()
    figures = run(args.seconds, args.rounds, args.rows, args.repeats)
    json.dump(figures, sys.stdout, indent=2)
    print()
    print(summary(figures))


if __name__ == "__main__":
    main()

"""What the service looks like right now: a Prometheus collector that reads the services' own state
at scrape time (cache, providers and circuits, models, memory, tasks, batches), and the JSON snapshot the monitoring
WebSocket sends every second. Task counts and batch progress come from the database, refreshed in the background
every REFRESH_SECONDS so neither a scrape nor a snapshot waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from sop_llm.infra.cache import Cache
from sop_llm.infra.errors import AppError
from sop_llm.providers.types import WorkClass
from sop_llm.services.embeddings.manager import EmbeddingManager
from sop_llm.services.local.manager import LocalModels, describe_scheduler
from sop_llm.services.monitoring.metrics import Metrics

REFRESH_SECONDS = 2.0
TASK_STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
BATCH_STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)


class Monitor(Collector):
    def __init__(
        self,
        metrics: Metrics,
        cache: Cache,
        describe_deployments: Callable[[], list[dict[str, Any]]],
        local: LocalModels,
        embeddings: EmbeddingManager,
        count_tasks: Callable[[], Awaitable[dict[str, int]]],
        batch_overview: Callable[[], Awaitable[dict[str, Any]]],
    ) -> None:
        """`describe_deployments`: each deployment's name, circuit, health and call counts (the router's
        `Deployments.describe`), read at every scrape and snapshot."""
        self._metrics = metrics
        self._cache = cache
        self._describe_deployments = describe_deployments
        self._local = local
        self._embeddings = embeddings
        self._count_tasks = count_tasks
        self._batch_overview = batch_overview
        self.batches: dict[str, Any] = {"by_status": {}, "active": []}
        self._process = psutil.Process()
        self.task_counts: dict[str, int] = dict.fromkeys(TASK_STATUSES, 0)
        self._refresh: asyncio.Task[None] | None = None
        metrics.registry.register(self)

    def start(self) -> None:
        self._refresh = asyncio.create_task(self._refresh_loop(), name="monitor-refresh")

    async def aclose(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(AppError):
                counts = await self._count_tasks()
                self.task_counts = {status: counts.get(status, 0) for status in TASK_STATUSES}
                self.batches = await self._batch_overview()
            await asyncio.sleep(REFRESH_SECONDS)

    def _models(self) -> dict[str, str]:
        states = {name: self._local.state(name).value for name in self._local.names()}
        for entry in self._embeddings.describe():
            states[entry["name"]] = entry["state"]
        return states

    def collect(self) -> Iterator[Metric]:
        stats = self._cache.stats
        for name, value in (("hits", stats.hits), ("misses", stats.misses), ("errors", stats.errors)):
            yield CounterMetricFamily(f"sop_llm_cache_{name}", f"Cache lookups: {name}", value=value)
        calls = CounterMetricFamily("sop_llm_provider_calls", "Calls per deployment", labels=["deployment"])
        failures = CounterMetricFamily(
            "sop_llm_provider_failures", "Failed calls per deployment", labels=["deployment"]
        )
        fallbacks = CounterMetricFamily(
            "sop_llm_fallbacks", "Requests moved on from a deployment to the next", labels=["deployment"]
        )
        circuit = GaugeMetricFamily("sop_llm_circuit_state", "1 for the current state", labels=["deployment", "state"])
        for entry in self._describe_deployments():
            name = entry["name"]
            calls.add_metric([name], entry["stats"]["calls"])
            failures.add_metric([name], entry["stats"]["failures"])
            fallbacks.add_metric([name], entry["stats"]["fallbacks"])
            for state in ("closed", "open", "half_open"):
                circuit.add_metric([name, state], 1.0 if entry["circuit"]["state"] == state else 0.0)
        yield from (calls, failures, fallbacks, circuit)
        models = GaugeMetricFamily("sop_llm_model_state", "1 for the current load state", labels=["model", "state"])
        for name, current in self._models().items():
            for state in ("unloaded", "loading", "ready", "failed"):
                models.add_metric([name, state], 1.0 if current == state else 0.0)
        yield models
        yield from self._scheduler_metrics()
        tasks = GaugeMetricFamily("sop_llm_tasks", "Tasks by status", labels=["status"])
        for status, count in self.task_counts.items():
            tasks.add_metric([status], count)
        yield tasks
        yield GaugeMetricFamily("sop_llm_task_queue_depth", "Tasks waiting to run", value=self.task_counts["pending"])
        yield from self._batch_metrics()
        yield GaugeMetricFamily("sop_llm_memory_rss_bytes", "Resident memory", value=self._process.memory_info().rss)

    def _batch_metrics(self) -> Iterator[Metric]:
        batches = GaugeMetricFamily("sop_llm_batches", "Batches by status", labels=["status"])
        for status in BATCH_STATUSES:
            batches.add_metric([status], self.batches["by_status"].get(status, 0))
        lines = GaugeMetricFamily(
            "sop_llm_batch_lines", "Lines of the unfinished batches (up to ten listed) by state", labels=["state"]
        )
        active = self.batches["active"]
        completed, failed = sum(b["completed"] for b in active), sum(b["failed"] for b in active)
        lines.add_metric(["completed"], completed)
        lines.add_metric(["failed"], failed)
        lines.add_metric(["waiting"], sum(b["total"] for b in active) - completed - failed)
        yield from (batches, lines)

    def _scheduler_metrics(self) -> Iterator[Metric]:
        """Models on the batched llama.cpp scheduler: sequences, KV cache use and sequences per decode step."""
        gauges = {
            key: GaugeMetricFamily(f"sop_llm_scheduler_{key}", text, labels=["model"])
            for key, text in (
                ("running", "Sequences decoding"),
                ("waiting", "Requests waiting for a free slot"),
                ("kv_cells_used", "KV cache cells held (running sequences and cached prefixes)"),
                ("kv_cells_total", "KV cache cells of the context"),
            )
        }
        prompt = CounterMetricFamily(
            "sop_llm_scheduler_prompt_tokens",
            "Prompt tokens evaluated or reused from a cached prefix",
            labels=["model", "source"],
        )
        batches = HistogramMetricFamily(
            "sop_llm_scheduler_batch_sequences", "Sequences decoded together per step", labels=["model"]
        )
        by_class = GaugeMetricFamily(
            "sop_llm_scheduler_sequences",
            "Requests in a slot (running) or waiting for one, by class (interactive, task, batch)",
            labels=["model", "class", "state"],
        )
        preemptions = CounterMetricFamily(
            "sop_llm_scheduler_preemptions",
            "Sequences preempted for more urgent work or a fair share",
            labels=["model"],
        )
        callers = GaugeMetricFamily(
            "sop_llm_scheduler_caller_slots",
            "Slots each caller holds (callers holding none are left out)",
            labels=["model", "caller"],
        )
        for name, snap in self._local.scheduler_snapshots().items():
            for key, family in gauges.items():
                family.add_metric([name], getattr(snap, key))
            for work_class in WorkClass:
                label = work_class.name.lower()
                by_class.add_metric([name, label, "running"], snap.running_by_class.get(work_class, 0))
                by_class.add_metric([name, label, "waiting"], snap.waiting_by_class.get(work_class, 0))
            preemptions.add_metric([name], snap.preemptions)
            for caller, slots in snap.slots_by_caller.items():
                callers.add_metric([name, caller or "-"], slots)
            prompt.add_metric([name, "evaluated"], snap.prompt_tokens_evaluated)
            prompt.add_metric([name, "reused"], snap.prompt_tokens_reused)
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, snap.batch_size_buckets), "+Inf"), snap.batch_size_counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            batches.add_metric([name], buckets, float(snap.batch_size_sum))
        yield from (*gauges.values(), prompt, batches, by_class, preemptions, callers)

    def snapshot(self) -> dict[str, Any]:
        """The WebSocket message: see docs/monitoring.md for the schema."""
        metrics = self._metrics
        models = self._models()
        return {
            "type": "snapshot",
            "timestamp": time.time(),
            "uptime_seconds": round(time.monotonic() - metrics.started, 1),
            "requests": {"total": metrics.total_requests, **metrics.window()},
            "tokens": dict(metrics.total_tokens),
            "active_connections": metrics.active,
            "memory": {
                "rss_bytes": self._process.memory_info().rss,
                "system_percent": psutil.virtual_memory().percent,
            },
            "cache": vars(self._cache.stats).copy(),
            "providers": [
                {
                    "name": p["name"],
                    # A local deployment is as healthy as its model's state says (null while not loaded); a remote
                    # one as its last health check said.
                    "healthy": _local_health(models.get(p["name"])) if p["local"] else p["health"]["ok"],
                    "circuit": p["circuit"]["state"],
                    "calls": p["stats"]["calls"],
                    "failures": p["stats"]["failures"],
                }
                for p in self._describe_deployments()
            ],
            "models": models,
            "schedulers": {name: describe_scheduler(snap) for name, snap in self._local.scheduler_snapshots().items()},
            "tasks": {**self.task_counts, "queue_depth": self.task_counts["pending"]},
            "batches": self.batches,
        }


def _local_health(state: str | None) -> bool | None:
    return {"ready": True, "failed": False}.get(state or "")

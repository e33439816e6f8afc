"""Request-level measurements (R-M1, R-M2): Prometheus counters and histograms in a registry of their own per app,
and a one-minute sliding window of request latencies for the live snapshot's percentiles.

Label values are bounded: routes are route templates (`/api/v1/tasks/{task_id}`) or `unmatched`; models are the
configured names or `other`. Time spent waiting for a provider is collected per request (`record_upstream`) so the
gateway overhead — a request's time minus its provider time — has a histogram of its own."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WINDOW_SECONDS = 60.0
_upstream: ContextVar[list[float] | None] = ContextVar("upstream_seconds", default=None)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


def record_upstream(seconds: float) -> None:
    """Called around each provider call: time this request spent waiting for a model or an upstream."""
    holder = _upstream.get()
    if holder is not None:
        holder.append(seconds)


def start_request() -> list[float]:
    holder: list[float] = []
    _upstream.set(holder)
    return holder


class Metrics:
    def __init__(self, model_names: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._models = frozenset(model_names)
        r = self.registry
        self.requests = Counter(
            "sop_llm_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "sop_llm_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "sop_llm_gateway_overhead_seconds",
            "Time a model request spent in the service itself: total minus time waiting for the provider",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "sop_llm_tokens", "Tokens by model and direction (in/out)", ["model", "direction"], registry=r
        )
        self.provider_latency = Histogram(
            "sop_llm_provider_request_duration_seconds",
            "Provider call latency by deployment and outcome",
            ["deployment", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active = Gauge("sop_llm_active_connections", "HTTP requests and WebSockets in progress", registry=r)
        self._window: deque[tuple[float, float]] = deque()
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.started = time.monotonic()
        self.total_requests = 0
        self.total_tokens = {"in": 0, "out": 0}

    def model_label(self, name: str) -> str:
        return name if name in self._models else "other"

    def observe_request(self, route: str, method: str, status: int, seconds: float, upstream: float | None) -> None:
        children = self._children.get((route, method, status))
        if children is None:  # labels() validates and locks on every call: look each series up once
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route))
            self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        if upstream is not None:
            self.overhead.observe(max(0.0, seconds - upstream))
        now = time.monotonic()
        self._window.append((now, seconds))
        self.total_requests += 1
        while self._window and self._window[0][0] < now - WINDOW_SECONDS:
            self._window.popleft()

    def observe_tokens(self, model: str, prompt: int, completion: int) -> None:
        label = self.model_label(model)
        self.tokens.labels(label, "in").inc(prompt)
        self.tokens.labels(label, "out").inc(completion)
        self.total_tokens["in"] += prompt
        self.total_tokens["out"] += completion

    def observe_provider(self, deployment: str, ok: bool, seconds: float) -> None:
        self.provider_latency.labels(self.model_label(deployment), "ok" if ok else "error").observe(seconds)

    def window(self) -> dict[str, float | int]:
        """Requests and latency percentiles (ms) over the last minute."""
        cutoff = time.monotonic() - WINDOW_SECONDS
        latencies = sorted(seconds for at, seconds in self._window if at >= cutoff)

        def percentile(q: float) -> float:
            if not latencies:
                return 0.0
            return round(latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))] * 1000, 3)

        return {
            "requests_last_minute": len(latencies),
            "p50_ms": percentile(0.50),
            "p95_ms": percentile(0.95),
            "p99_ms": percentile(0.99),
        }

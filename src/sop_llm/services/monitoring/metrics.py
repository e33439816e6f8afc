"""Request-level measurements: counters and fixed-bucket histograms kept as plain numbers (the event
loop is the only writer, so no locks on the hot path) and exposed to Prometheus at scrape time, plus a one-minute
sliding window of request latencies for the live snapshot's percentiles.

Label values are bounded: routes are route templates (`/api/v1/tasks/{task_id}`) or `unmatched`; models and
deployments are the configured names or `other`. Time spent waiting for a provider is collected per request
(`record_upstream`) so the gateway overhead — a request's time minus its provider time — has a histogram of its own."""

from __future__ import annotations

import bisect
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from contextvars import ContextVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            out.append((bound, float(cumulative)))
        return out


class Metrics(Collector):
    def __init__(self, model_names: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._models = frozenset(model_names)
        self._requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._overhead = _Histogram(OVERHEAD_BUCKETS)
        self._tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._provider: dict[tuple[str, str], _Histogram] = {}
        self.active = 0
        self._window: deque[tuple[float, float]] = deque()
        self.started = time.monotonic()
        self.total_requests = 0
        self.total_tokens = {"in": 0, "out": 0}
        self.registry.register(self)

    def model_label(self, name: str) -> str:
        return name if name in self._models else "other"

    def add_model(self, name: str) -> None:
        """Label `name`'s figures with its name (a model registered while the service runs)."""
        self._models = self._models | {name}

    def observe_request(self, route: str, method: str, status: int, seconds: float, upstream: float | None) -> None:
        self._requests[(route, method, status)] += 1
        histogram = self._latency.get(route)
        if histogram is None:
            histogram = self._latency[route] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)
        if upstream is not None:
            self._overhead.observe(max(0.0, seconds - upstream))
        now = time.monotonic()
        self._window.append((now, seconds))
        self.total_requests += 1
        if self._window[0][0] < now - WINDOW_SECONDS:
            while self._window and self._window[0][0] < now - WINDOW_SECONDS:
                self._window.popleft()

    def observe_tokens(self, model: str, prompt: int, completion: int) -> None:
        label = self.model_label(model)
        self._tokens[(label, "in")] += prompt
        self._tokens[(label, "out")] += completion
        self.total_tokens["in"] += prompt
        self.total_tokens["out"] += completion

    def observe_provider(self, deployment: str, ok: bool, seconds: float) -> None:
        key = (self.model_label(deployment), "ok" if ok else "error")
        histogram = self._provider.get(key)
        if histogram is None:
            histogram = self._provider[key] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "sop_llm_http_requests", "HTTP requests by route, method, status", labels=["route", "method", "status"]
        )
        for (route, method, status), count in list(self._requests.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily("sop_llm_http_request_duration_seconds", "HTTP latency", labels=["route"])
        for route, histogram in list(self._latency.items()):
            latency.add_metric([route], histogram.buckets(), histogram.total)
        yield latency
        overhead = HistogramMetricFamily(
            "sop_llm_gateway_overhead_seconds",
            "Time a model request spent in the service itself: total minus time waiting for the provider",
        )
        overhead.add_metric([], self._overhead.buckets(), self._overhead.total)
        yield overhead
        tokens = CounterMetricFamily("sop_llm_tokens", "Tokens by model and direction", labels=["model", "direction"])
        for (model, direction), count in list(self._tokens.items()):
            tokens.add_metric([model, direction], count)
        yield tokens
        provider = HistogramMetricFamily(
            "sop_llm_provider_request_duration_seconds",
            "Provider call latency by deployment and outcome",
            labels=["deployment", "outcome"],
        )
        for (deployment, outcome), histogram in list(self._provider.items()):
            provider.add_metric([deployment, outcome], histogram.buckets(), histogram.total)
        yield provider
        yield GaugeMetricFamily(
            "sop_llm_active_connections", "HTTP requests and WebSockets in progress", value=self.active
        )

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

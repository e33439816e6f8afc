"""Deployments: every generation deployment, its lifecycle, cached health, circuit breaker, load and limits, and
the pool of deployments serving each model.

A model is served by one deployment of its own name, or by the nodes its `deployments:` list (a pool, with a
strategy that ranks them per request). Local deployments (llama.cpp, transformers) are loaded, admitted and
cancelled by LocalModels; remote ones open their client here. Health checks are cheap (loaded state, or the
upstream's model list — never a generation endpoint), run in the background every `HEALTH_CHECK_INTERVAL` seconds
and are served from cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from sop_llm.infra.errors import AppError, UnsupportedFeatureError
from sop_llm.infra.settings import Settings
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.types import Chunk, Completion, GenerationRequest, Health, Usage
from sop_llm.services.local.manager import LocalModels
from sop_llm.services.routing.build import Planned
from sop_llm.services.routing.circuit_breaker import CircuitBreaker, CircuitState
from sop_llm.services.routing.load import NodeLoad
from sop_llm.services.routing.node_limits import NodeLimits
from sop_llm.services.routing.provider_span import provider_span
from sop_llm.services.routing.strategies import Strategy, make_strategy

if TYPE_CHECKING:
    from sop_llm.services.routing.circuit_share import SharedCircuits

# How often replicas exchange opened breakers through Redis (when REDIS_URL is set).
CIRCUIT_SHARE_INTERVAL = 1.0


@dataclass
class DeploymentStats:
    calls: int = 0
    failures: int = 0
    fallbacks: int = 0  # times a request moved on from this deployment to the next one
    retries: int = 0


@dataclass
class HealthRecord:
    ok: bool | None = None
    detail: str = "not checked yet"
    checked_at: float = 0.0
    latency_ms: float = 0.0
    checks: int = 0


@dataclass
class Deployment:
    name: str
    provider: GenerationProvider
    breaker: CircuitBreaker
    model: str = ""  # the configured model it serves (its own name when the model has one deployment)
    weight: float = 1.0
    limits: NodeLimits | None = None
    load: NodeLoad = field(default_factory=NodeLoad)
    stats: DeploymentStats = field(default_factory=DeploymentStats)
    health: HealthRecord = field(default_factory=HealthRecord)

    def state(self) -> str:
        """healthy, ejected (circuit open), probing (half-open), unhealthy (health check failing) or unknown."""
        if self.breaker.state is CircuitState.OPEN:
            return "ejected"
        if self.breaker.state is CircuitState.HALF_OPEN:
            return "probing"
        return {True: "healthy", False: "unhealthy", None: "unknown"}[self.health.ok]


@dataclass
class Pool:
    """The deployments serving one model, ranked per request by the model's strategy."""

    model: str
    members: list[Deployment]
    strategy: Strategy
    strategy_name: str = "least_outstanding"

    def order(self, request: GenerationRequest) -> list[Deployment]:
        if len(self.members) == 1:
            return self.members
        return self.strategy.order(self.members, request)


class Deployments:
    def __init__(
        self, settings: Settings, planned: list[Planned], strategies: dict[str, str], local: LocalModels
    ) -> None:
        self._settings = settings
        self._local = local
        self._redis: Any = None
        self.deployments: dict[str, Deployment] = {}
        self.pools: dict[str, Pool] = {}
        self._install(planned, strategies)
        self._health_task: asyncio.Task[None] | None = None
        self._shared: SharedCircuits | None = None
        self._share_task: asyncio.Task[None] | None = None
        if settings.redis_url and any(not d.provider.local for d in self.deployments.values()):
            from sop_llm.services.routing.circuit_share import SharedCircuits  # the Redis client: only when used

            self._shared = SharedCircuits(settings.redis_url, settings.redis_timeout)

    def _new(self, planned: Planned) -> Deployment:
        limits = NodeLimits(planned.name, planned.limits, self._redis_client()) if planned.limits else None
        breaker = CircuitBreaker(self._settings.circuit_failure_threshold, self._settings.circuit_cooldown_seconds)
        return Deployment(planned.name, planned.provider, breaker, planned.model, planned.weight, limits)

    def _install(self, planned: list[Planned], strategies: dict[str, str]) -> None:
        for entry in planned:
            deployment = self._new(entry)
            self.deployments[entry.name] = deployment
            pool = self.pools.get(entry.model)
            if pool is None:
                strategy = strategies.get(entry.model, "least_outstanding")
                self.pools[entry.model] = Pool(entry.model, [deployment], make_strategy(strategy), strategy)
            else:
                pool.members.append(deployment)

    def _redis_client(self) -> Any:
        """The Redis client that deployments' limits are counted in (REDIS_URL), made when first needed."""
        if self._redis is None and self._settings.redis_url:
            from redis.asyncio import Redis

            url, timeout = self._settings.redis_url, self._settings.redis_timeout
            self._redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return self._redis

    async def replace_pool(self, model: str, planned: list[Planned], strategy: str) -> list[Deployment]:
        """Serve `model` by `planned` from now on (a configuration reload); the deployments it no longer uses are
        returned for closing once idle. A deployment planned as it was keeps its figures, breaker and client."""
        old = self.pools.get(model)
        leaving = {member.name: member for member in (old.members if old is not None else [])}
        members = []
        for entry in planned:
            current = leaving.get(entry.name)
            if current is not None and _same_node(current, entry) and _same_limits(current, entry):
                current.weight = entry.weight
                members.append(leaving.pop(entry.name))
                continue
            if not entry.provider.local:
                await entry.provider.load()  # opens a client session; no network traffic
            members.append(self._new(entry))
        for entry_name in leaving:
            self.deployments.pop(entry_name, None)
        for member in members:
            self.deployments[member.name] = member
        self.pools[model] = Pool(model, members, make_strategy(strategy), strategy)
        return list(leaving.values())

    def add(self, name: str, provider: GenerationProvider) -> None:
        """A local model registered while the service runs (it needs no client to open)."""
        self._install([Planned(name, name, provider)], {})

    def remove(self, name: str) -> None:
        pool = self.pools.pop(name, None)
        for member in pool.members if pool is not None else []:
            self.deployments.pop(member.name, None)

    async def start(self) -> None:
        for deployment in self.deployments.values():
            if deployment.provider.local:
                continue
            try:
                await deployment.provider.load()  # opens a client session; no network traffic
            except AppError as exc:
                # One misconfigured deployment (say, a missing key) must not stop the service: its health says
                # why, and calls to it fail over to the next deployment.
                logger.error("{} is unavailable: {}", deployment.name, exc.message)
        self._health_task = asyncio.create_task(self._health_loop(), name="provider-health")
        if self._shared is not None:
            self._share_task = asyncio.create_task(self._share_loop(self._shared), name="circuit-share")

    async def aclose(self) -> None:
        for task in (self._health_task, self._share_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._shared is not None:
            await self._shared.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        for deployment in self.deployments.values():
            if not deployment.provider.local:
                await deployment.provider.aclose()

    # -- calls ----------------------------------------------------------------------------------------
    async def generate_on(self, deployment: Deployment, request: GenerationRequest, lease: str | None) -> Completion:
        """One call; `lease` (from the deployment's limits) is handed back with the tokens the answer used."""
        _check_supported(deployment.provider, request)
        load = deployment.load
        load.in_flight += 1
        started = time.perf_counter()
        tokens = 0
        span = provider_span(deployment.provider, request)
        try:
            if deployment.provider.local:
                completion = await self._local.generate_admitted(deployment.name, request)
            else:
                completion = await deployment.provider.generate(request)  # remote providers enforce `timeout`
            tokens = completion.usage.total_tokens
            _observe(load, time.perf_counter() - started, completion.usage, None)
            if span is not None:
                span.answered(completion)
            return completion
        except BaseException as exc:
            if span is not None:
                span.failed(exc)
            raise
        finally:
            if span is not None:
                span.end()
            load.in_flight -= 1
            if lease is not None and deployment.limits is not None:
                await deployment.limits.release(lease, tokens)

    async def stream_on(
        self, deployment: Deployment, request: GenerationRequest, lease: str | None
    ) -> AsyncIterator[Chunk]:
        """The stream, counted in flight on its deployment until it ends; its first-token and per-token times and
        its tokens then go to the deployment's figures and limits."""
        load = deployment.load
        load.in_flight += 1
        started = time.perf_counter()
        first_token_s: float | None = None
        usage: Usage | None = None
        chunks: AsyncIterator[Chunk] | None = None
        span = None
        try:
            _check_supported(deployment.provider, request)
            span = provider_span(deployment.provider, request)
            if deployment.provider.local:
                chunks = self._local.stream_admitted(deployment.name, request)
            else:
                chunks = deployment.provider.stream(request)
            async for chunk in chunks:
                if first_token_s is None:
                    first_token_s = time.perf_counter() - started
                if chunk.usage is not None:
                    usage = chunk.usage
                if span is not None:
                    span.chunk(chunk)
                yield chunk
            if usage is not None:
                _observe(load, time.perf_counter() - started, usage, first_token_s)
            if span is not None:
                span.streamed()
        except BaseException as exc:
            if span is not None:
                span.failed(exc)
            raise
        finally:
            if span is not None:
                span.end()
            load.in_flight -= 1
            if chunks is not None:
                await chunks.aclose()  # type: ignore[attr-defined]
            if lease is not None and deployment.limits is not None:
                await deployment.limits.release(lease, usage.total_tokens if usage is not None else 0)

    async def _share_loop(self, shared: SharedCircuits) -> None:
        while True:
            await shared.sync({name: d.breaker for name, d in self.deployments.items() if not d.provider.local})
            await asyncio.sleep(CIRCUIT_SHARE_INTERVAL)

    # -- health ---------------------------------------------------------------------------------------
    async def _health_loop(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self._settings.health_check_interval)

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(d) for d in self.deployments.values()))

    async def _check(self, deployment: Deployment) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.health_check_timeout):
                result = await deployment.provider.health()
        except TimeoutError:
            result = Health(False, f"health check timed out after {self._settings.health_check_timeout:g} s")
        except AppError as exc:
            result = Health(False, exc.message)
        except Exception as exc:  # a health check must never take the loop down
            logger.warning("health check of {} failed unexpectedly: {!r}", deployment.name, exc)
            result = Health(False, f"{type(exc).__name__}")
        record = deployment.health
        record.ok, record.detail = result.ok, result.detail
        record.checked_at = time.time()
        record.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        record.checks += 1

    def describe(self) -> list[dict[str, Any]]:
        described = []
        for deployment in self.deployments.values():
            provider = deployment.provider
            health = deployment.health
            entry: dict[str, Any] = {
                "name": deployment.name,
                "model": deployment.model,
                "state": deployment.state(),
                "provider": provider.model_config.provider,
                "type": provider.provider_config.type,
                "local": provider.local,
                "upstream_model": provider.model_config.model,
                "health": {
                    "ok": health.ok,
                    "detail": health.detail,
                    "checked_at": health.checked_at or None,
                    "latency_ms": health.latency_ms,
                },
                "circuit": deployment.breaker.describe(),
                "stats": vars(deployment.stats).copy(),
                "load": deployment.load.describe(),
                "weight": deployment.weight,
                "limits": deployment.limits.describe() if deployment.limits is not None else None,
            }
            if provider.provider_config.base_url:
                entry["base_url"] = provider.provider_config.base_url
            described.append(entry)
        return described


def _same_node(current: Deployment, planned: Planned) -> bool:
    provider = current.provider
    return (
        type(provider) is type(planned.provider)
        and provider.provider_config == planned.provider.provider_config
        and provider.model_config == planned.provider.model_config
    )


def _same_limits(current: Deployment, planned: Planned) -> bool:
    return (current.limits.limits if current.limits is not None else None) == (planned.limits or None)


def _observe(load: NodeLoad, seconds: float, usage: Usage, first_token_s: float | None) -> None:
    load.served += 1
    load.prompt_tokens += usage.prompt_tokens
    load.cached_prompt_tokens += usage.cached_tokens
    load.observe(seconds, usage.completion_tokens, first_token_s)


def _check_supported(provider: GenerationProvider, request: GenerationRequest) -> None:
    if request.logprobs is not None and not provider.logprobs:
        raise UnsupportedFeatureError(
            f"logprobs: model '{provider.name}' cannot report log probabilities; llama.cpp models on the batched "
            "scheduler can (`scheduler: batched` in config/models.yaml)",
            param="logprobs",
        )

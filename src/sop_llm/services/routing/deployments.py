"""Deployments: every generation deployment, its lifecycle, cached health and circuit breaker.

Local deployments (llama.cpp, transformers) are loaded, admitted and cancelled by LocalModels; remote ones open
their client here. Health checks are cheap (loaded state, or the upstream's model list — never a generation
endpoint), run in the background every `HEALTH_CHECK_INTERVAL` seconds and are served from cache.
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
from sop_llm.providers.types import Chunk, Completion, GenerationRequest, Health
from sop_llm.services.local.manager import LocalModels
from sop_llm.services.routing.circuit_breaker import CircuitBreaker

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
    stats: DeploymentStats = field(default_factory=DeploymentStats)
    health: HealthRecord = field(default_factory=HealthRecord)


class Deployments:
    def __init__(self, settings: Settings, providers: dict[str, GenerationProvider], local: LocalModels) -> None:
        self._settings = settings
        self._local = local
        self.deployments = {
            name: Deployment(
                name,
                provider,
                CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_cooldown_seconds),
            )
            for name, provider in providers.items()
        }
        self._health_task: asyncio.Task[None] | None = None
        self._shared: SharedCircuits | None = None
        self._share_task: asyncio.Task[None] | None = None
        if settings.redis_url and any(not d.provider.local for d in self.deployments.values()):
            from sop_llm.services.routing.circuit_share import SharedCircuits  # the Redis client: only when used

            self._shared = SharedCircuits(settings.redis_url, settings.redis_timeout)

    def add(self, name: str, provider: GenerationProvider) -> None:
        """A local model registered while the service runs (it needs no client to open)."""
        self.deployments[name] = Deployment(
            name,
            provider,
            CircuitBreaker(self._settings.circuit_failure_threshold, self._settings.circuit_cooldown_seconds),
        )

    def remove(self, name: str) -> None:
        self.deployments.pop(name, None)

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
        for deployment in self.deployments.values():
            if not deployment.provider.local:
                await deployment.provider.aclose()

    # -- calls ----------------------------------------------------------------------------------------
    async def generate_on(self, name: str, request: GenerationRequest) -> Completion:
        deployment = self.deployments[name]
        _check_supported(deployment.provider, request)
        if deployment.provider.local:
            return await self._local.generate_admitted(name, request)
        return await deployment.provider.generate(request)  # remote providers enforce their own `timeout`

    def stream_on(self, name: str, request: GenerationRequest) -> AsyncIterator[Chunk]:
        deployment = self.deployments[name]
        _check_supported(deployment.provider, request)
        if deployment.provider.local:
            return self._local.stream_admitted(name, request)
        return deployment.provider.stream(request)

    async def _share_loop(self, shared: SharedCircuits) -> None:
        remote = {name: d.breaker for name, d in self.deployments.items() if not d.provider.local}
        while True:
            await shared.sync(remote)
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
            }
            if provider.provider_config.base_url:
                entry["base_url"] = provider.provider_config.base_url
            described.append(entry)
        return described


def _check_supported(provider: GenerationProvider, request: GenerationRequest) -> None:
    if request.logprobs is not None and not provider.logprobs:
        raise UnsupportedFeatureError(
            f"logprobs: model '{provider.name}' cannot report log probabilities; llama.cpp models on the batched "
            "scheduler can (`scheduler: batched` in config/models.yaml)",
            param="logprobs",
        )

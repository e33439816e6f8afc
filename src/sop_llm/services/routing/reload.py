"""Reload the configuration files without a restart (`sop-llm config reload`, SIGHUP, or the admin API).

What changes at once: every model served by remote providers — its deployments (nodes, URLs, keys, weights,
limits), strategy, aliases and fallbacks — and models of that kind added or removed. A request in flight keeps the
deployment it started on; a replaced deployment's client is closed once its last request has ended. Models that
run in this process (llama.cpp, transformers) and embedding models keep what they were started with: a change to
them is reported as needing a restart. An invalid file changes nothing and says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from sop_llm.infra.model_config import ModelConfig, ServiceConfig, load_service_config
from sop_llm.infra.settings import Settings
from sop_llm.providers.registry import generation_provider, provider_types
from sop_llm.services.monitoring.metrics import Metrics
from sop_llm.services.routing.build import plan_deployments
from sop_llm.services.routing.deployments import Deployment, Deployments
from sop_llm.services.routing.router import ModelRouter

# How often a replaced deployment is looked at to see whether its last request has ended.
DRAIN_POLL_SECONDS = 0.5


@dataclass
class Reloaded:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return vars(self).copy()


class ConfigReloader:
    def __init__(
        self,
        settings: Settings,
        config: ServiceConfig,
        deployments: Deployments,
        router: ModelRouter,
        metrics: Metrics,
        environ: Callable[[], Mapping[str, str]],
        pulled: Callable[[], Iterable[str]],
    ) -> None:
        self._settings = settings
        self._config = config
        self._deployments = deployments
        self._router = router
        self._metrics = metrics
        self._environ = environ
        self._pulled = pulled
        self._lock = asyncio.Lock()
        self._draining: set[asyncio.Task[None]] = set()

    async def reload(self) -> Reloaded:
        """Read the files again and apply what can be applied; raises ConfigError (nothing changed) when a file is
        invalid."""
        async with self._lock:
            new = load_service_config(self._settings.config_dir, provider_types(), self._environ())
            return await self._apply(new)

    async def _apply(self, new: ServiceConfig) -> Reloaded:
        old = self._config
        report = Reloaded()
        pulled = set(self._pulled())
        for name in sorted({*old.models, *new.models}):
            before, after = old.models.get(name), new.models.get(name)
            if after is None and name in pulled:
                continue  # registered from the pulled-model registry, not from the files
            local = (before is not None and self._is_local(before, old)) or (
                after is not None and self._is_local(after, new)
            )
            if local:
                (report.unchanged if before == after else report.restart_needed).append(name)
            elif after is None:
                await self._remove(name)
                report.removed.append(name)
            elif before is not None and self._same(name, old, new):
                report.unchanged.append(name)
            else:
                await self._replace(name, after, new)
                (report.changed if before is not None else report.added).append(name)
        for name in sorted({*old.embeddings, *new.embeddings}):
            if old.embeddings.get(name) != new.embeddings.get(name):
                report.restart_needed.append(name)
        self._config.providers.update(new.providers)
        logger.info("configuration reloaded: {}", report.describe())
        return report

    # -- what a model is --------------------------------------------------------------------------------
    @staticmethod
    def _is_local(model: ModelConfig, config: ServiceConfig) -> bool:
        return not model.deployments and generation_provider(config.providers[model.provider].type).local

    @staticmethod
    def _same(name: str, old: ServiceConfig, new: ServiceConfig) -> bool:
        """The model and every provider entry it uses read the same in both."""
        model_old, model_new = old.models[name], new.models[name]
        if model_old != model_new:
            return False
        used = {model_new.provider, *(d.provider for d in model_new.deployments)}
        return all(old.providers.get(p) == new.providers.get(p) for p in used)

    # -- applying -----------------------------------------------------------------------------------------
    async def _replace(self, name: str, model: ModelConfig, new: ServiceConfig) -> None:
        planned = plan_deployments(ServiceConfig(providers=new.providers, models={name: model}, embeddings={}))
        for entry in planned:
            self._metrics.add_model(entry.name)
        replaced = await self._deployments.replace_pool(name, planned, model.strategy)
        self._router.remove(name)
        self._router.add(name, model)
        self._drain(replaced)

    async def _remove(self, name: str) -> None:
        pool = self._deployments.pools.get(name)
        members = list(pool.members) if pool is not None else []
        self._router.remove(name)
        self._deployments.remove(name)
        self._drain(members)

    def _drain(self, members: list[Deployment]) -> None:
        for member in members:
            task = asyncio.create_task(_close_when_idle(member, self._settings.llm_request_timeout))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

    async def aclose(self) -> None:
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)


async def _close_when_idle(member: Deployment, longest: float) -> None:
    """Close a replaced deployment's client once its last request has ended (or after the longest a request may
    take)."""
    waited = 0.0
    while member.load.in_flight and waited < longest:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
        waited += DRAIN_POLL_SECONDS
    await member.provider.aclose()

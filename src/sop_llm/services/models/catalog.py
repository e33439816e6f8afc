"""Pulled models served by name, without editing YAML or restarting.

At startup every model in the registry is registered with the services that serve its kind (a GGUF with the local
models, the deployments and the router; an embedding model or cross-encoder with the embedding manager); a pull
through this process registers its model at once; a name nobody knows makes the catalog look it up in the registry
(one lookup by name), so a model pulled by `sop-llm models pull` — another process — is served by its next
request. Models in models.yaml or embeddings.yaml keep their names: a pulled model whose name or alias is taken
is not registered. Every registered model loads on its first request (local models' residency rules apply).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loguru import logger

from sop_llm.infra.errors import ModelNotFoundError
from sop_llm.infra.model_config import ConfigError, EmbeddingModelConfig, ModelConfig, ServiceConfig
from sop_llm.providers.registry import generation_provider
from sop_llm.services.embeddings.manager import EmbeddingManager
from sop_llm.services.local.manager import LocalModels
from sop_llm.services.models.model import PulledModelRow
from sop_llm.services.models.repository import PulledModels, Removal
from sop_llm.services.models.serving import serving_config
from sop_llm.services.monitoring.metrics import Metrics
from sop_llm.services.routing.deployments import Deployments
from sop_llm.services.routing.router import ModelRouter


@dataclass
class PulledCatalog:
    config: ServiceConfig
    registry: PulledModels
    router: ModelRouter
    local: LocalModels
    deployments: Deployments
    embeddings: EmbeddingManager
    metrics: Metrics
    served: dict[str, str] = field(default_factory=dict)  # name -> kind, of the pulled models registered here

    async def refresh(self) -> list[str]:
        """Register the registry's models not served yet; their names."""
        added = []
        for row in await self.registry.list():
            if row.name not in self.served and self.register(row):
                added.append(row.name)
        return added

    async def ensure(self, name: str | None) -> None:
        """Before a request names `name`: when no model answers to it, look in the registry again (a pull by
        another process)."""
        if name is None or self._known(name):
            return
        row = await self.registry.find(name)
        if row is not None and row.name not in self.served:
            self.register(row)

    def _known(self, name: str) -> bool:
        try:
            self.router.resolve(name)
            return True
        except ModelNotFoundError:
            pass
        try:
            self.embeddings.resolve(name)
            return True
        except ModelNotFoundError:
            return False

    def register(self, row: PulledModelRow) -> bool:
        """Serve `row`; False (and a log line) when its name is taken or it cannot be served here."""
        try:
            config = serving_config(row, self.config.providers)
        except ConfigError as exc:
            logger.warning("pulled model {} is not served: {}", row.name, exc)
            return False
        labels = (row.name, *config.aliases)
        if any(self._known(label) for label in labels):
            logger.warning("pulled model {} is not served: a configured model has its name or alias", row.name)
            return False
        if isinstance(config, ModelConfig):
            provider_config = self.config.providers[config.provider]
            provider = generation_provider(provider_config.type)(row.name, config, provider_config)
            self.local.add(row.name, provider)
            self.deployments.add(row.name, provider)
            self.router.add(row.name, config)
        else:
            assert isinstance(config, EmbeddingModelConfig)
            self.config.embeddings[row.name] = config
            self.embeddings.add(row.name, config)
        self.metrics.add_model(row.name)
        self.served[row.name] = row.kind
        logger.info("serving pulled model {} ({})", row.name, row.kind)
        return True

    async def remove(self, name: str) -> Removal:
        """Stop serving a pulled model and delete it from the registry and the disk (files other models use stay)."""
        row = await self.registry.get(name)
        kind = self.served.pop(row.name, None)
        if kind == "gguf":
            await self.local.remove(row.name)
            self.deployments.remove(row.name)
            self.router.remove(row.name)
        elif kind is not None:
            await self.embeddings.remove(row.name)
            self.config.embeddings.pop(row.name, None)
        return await self.registry.remove(row.name)

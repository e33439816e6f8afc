"""Build every service from settings once; the app's lifespan starts and closes them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sop_llm.infra.cache import Cache, MemoryCache
from sop_llm.infra.model_config import ServiceConfig, load_service_config
from sop_llm.infra.settings import Settings
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.registry import generation_provider, provider_types
from sop_llm.services.embedding_manager import EmbeddingManager
from sop_llm.services.llm_manager import LLMManager
from sop_llm.services.unified_llm import UnifiedLLM


@dataclass
class Services:
    settings: Settings
    config: ServiceConfig
    cache: Cache
    llm: LLMManager
    embeddings: EmbeddingManager
    unified: UnifiedLLM
    started_at: float = field(default_factory=time.time)

    def start(self) -> None:
        """Begin loading the startup models in the background; returns at once."""
        self.llm.start()
        self.embeddings.start()

    async def aclose(self) -> None:
        await self.embeddings.aclose()
        await self.llm.aclose()
        await self.cache.aclose()

    def ready(self) -> tuple[bool, dict[str, str]]:
        states = {name: self.llm.state(name).value for name in self.llm.default_names()}
        for entry in self.embeddings.describe():
            if entry["name"] in self.embeddings.default_names():
                states[entry["name"]] = entry["state"]
        return all(state == "ready" for state in states.values()), states


def build_services(settings: Settings) -> Services:
    config = load_service_config(settings.config_dir, provider_types())
    cache = MemoryCache(settings.cache_max_items, settings.cache_ttl_seconds)
    providers: dict[str, GenerationProvider] = {}
    for name, model in config.models.items():
        provider_config = config.providers[model.provider]
        providers[name] = generation_provider(provider_config.type)(name, model, provider_config)
    local = {name: p for name, p in providers.items() if p.local}
    llm = LLMManager(settings, local)
    return Services(
        settings=settings,
        config=config,
        cache=cache,
        llm=llm,
        embeddings=EmbeddingManager(settings, config, cache),
        unified=UnifiedLLM(settings, config, providers, llm),
    )

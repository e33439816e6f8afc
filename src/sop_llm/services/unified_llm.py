"""One entry point for generation: resolve a model name or alias (or the default), check the request against
limits and the model's capabilities, and hand it to the manager that serves the model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sop_llm.infra.errors import ModelNotFoundError, PromptTooLongError, UnsupportedFeatureError
from sop_llm.infra.model_config import ServiceConfig
from sop_llm.infra.settings import Settings
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.types import Capability, Chunk, Completion, GenerationRequest
from sop_llm.services.llm_manager import LLMManager


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    provider: GenerationProvider


class UnifiedLLM:
    def __init__(
        self,
        settings: Settings,
        config: ServiceConfig,
        providers: dict[str, GenerationProvider],
        llm_manager: LLMManager,
    ) -> None:
        self._settings = settings
        self._providers = providers
        self._llm = llm_manager
        self._aliases: dict[str, str] = {}
        for name, model in config.models.items():
            self._aliases[name] = name
            for alias in model.aliases:
                self._aliases[alias] = name

    def resolve(self, name: str | None) -> ResolvedModel:
        wanted = name or self._settings.llm_default_model
        canonical = self._aliases.get(wanted)
        if canonical is None:
            raise ModelNotFoundError(
                f"the model '{wanted}' does not exist; available: {sorted(self._aliases)}",
                param="model",
            )
        return ResolvedModel(canonical, self._providers[canonical])

    @property
    def default_max_tokens(self) -> int:
        """The answer length when a client does not say (OpenAI's default is "as long as the model goes")."""
        return self._settings.llm_max_tokens_per_request

    def names(self) -> list[str]:
        return list(self._providers)

    def describe(self) -> list[dict[str, Any]]:
        described = []
        for name, provider in self._providers.items():
            config = provider.model_config
            entry: dict[str, Any] = {
                "name": name,
                "kind": "generation",
                "provider": config.provider,
                "aliases": list(config.aliases),
                "capabilities": sorted(c.value for c in provider.capabilities),
                "context_length": config.context_length,
                "default": name == self._aliases.get(self._settings.llm_default_model),
            }
            if name in self._llm:
                entry.update(self._llm.describe(name))
            described.append(entry)
        return described

    def prepare(self, model: str | None, request: GenerationRequest) -> ResolvedModel:
        """Resolve the model and check the request before any work starts (errors here are plain 4xx)."""
        resolved = self.resolve(model)
        limit = self._settings.llm_max_prompt_chars
        if request.prompt_chars() > limit:
            raise PromptTooLongError(
                f"the prompt is {request.prompt_chars()} characters; LLM_MAX_PROMPT_CHARS is {limit}",
                param="messages" if request.messages is not None else "prompt",
            )
        request.max_tokens = min(request.max_tokens, self._settings.llm_max_tokens_per_request)
        caps = resolved.provider.capabilities
        if request.tools and Capability.FUNCTION_CALLING not in caps:
            raise UnsupportedFeatureError(
                f"model '{resolved.name}' does not support tools (function calling)", param="tools"
            )
        if request.messages is not None and Capability.CHAT not in caps:
            raise UnsupportedFeatureError(f"model '{resolved.name}' does not support chat", param="messages")
        return resolved

    async def generate(self, model: str | None, request: GenerationRequest) -> tuple[str, Completion]:
        resolved = self.prepare(model, request)
        return resolved.name, await self._llm.generate(resolved.name, request)

    def stream(self, resolved: ResolvedModel, request: GenerationRequest) -> AsyncIterator[Chunk]:
        return self._llm.stream(resolved.name, request)

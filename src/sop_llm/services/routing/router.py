"""One entry point for generation: resolve a model name or alias (or the default) to a chain of models — the
model, then its `fallbacks:` (or the request's) — each served by its deployments in the order its strategy ranks
them for this request; skip those that lack a needed capability or whose circuit is open, and call them in order.

A deployment at its own limits (max_parallel, rpm, tpm) is passed over for the next one of the model; when all of
them are, the request waits for one (at most LLM_QUEUE_TIMEOUT, then 429). A retryable failure (timeout,
connection error, 429, 5xx, model not loaded) moves on to the model's next deployment at once; on its last one it
is retried a bounded number of times, honouring `Retry-After`, before the next model is tried. Non-retryable errors
(400, 401, validation) are returned at once. A stream moves on only until its first chunk has arrived; after that
an error ends the stream instead."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from loguru import logger

from sop_llm.infra.errors import (
    AppError,
    BadRequestError,
    CircuitOpenError,
    ModelNotFoundError,
    OverloadedError,
    PromptTooLongError,
    ProviderError,
    UnsupportedFeatureError,
)
from sop_llm.infra.model_config import ModelConfig, ServiceConfig
from sop_llm.infra.settings import Settings
from sop_llm.providers.types import Capability, Chunk, Completion, GenerationRequest
from sop_llm.services.local.manager import LocalModels
from sop_llm.services.monitoring.metrics import Metrics, record_upstream
from sop_llm.services.routing.deployments import Deployment, Deployments
from sop_llm.services.routing.served import note_served

T = TypeVar("T")
# How often a request waiting for a deployment at its limits looks again.
LIMIT_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Route:
    """The resolved model and the deployments to try: one group per model (the model, then its fallbacks), each
    in the order its strategy ranked them for this request."""

    model: str
    groups: tuple[tuple[Deployment, ...], ...]

    @property
    def chain(self) -> tuple[Deployment, ...]:
        return tuple(deployment for group in self.groups for deployment in group)


class ModelRouter:
    def __init__(
        self,
        settings: Settings,
        config: ServiceConfig,
        deployments: Deployments,
        local: LocalModels,
        metrics: Metrics,
    ) -> None:
        self._metrics = metrics
        self._settings = settings
        self._config = config
        self._deployments = deployments
        self._local = local
        self._aliases: dict[str, str] = {}
        for name, model in config.models.items():
            self._aliases[name] = name
            for alias in model.aliases:
                self._aliases[alias] = name

    def add(self, name: str, model: ModelConfig) -> None:
        """Route `name` and its aliases as well (a model registered while the service runs; its deployment is
        added to Deployments first). Configured names and aliases keep theirs."""
        self._config.models[name] = model
        for label in (name, *model.aliases):
            self._aliases.setdefault(label, name)

    def remove(self, name: str) -> None:
        self._config.models.pop(name, None)
        for label in [label for label, canonical in self._aliases.items() if canonical == name]:
            del self._aliases[label]

    @property
    def default_max_tokens(self) -> int:
        """The answer length when a client does not say (OpenAI's default is "as long as the model goes")."""
        return self._settings.llm_max_tokens_per_request

    def resolve(self, name: str | None) -> str:
        wanted = name or self._settings.llm_default_model
        canonical = self._aliases.get(wanted)
        if canonical is None:
            raise ModelNotFoundError(
                f"the model '{wanted}' does not exist; available: {sorted(self._aliases)}", param="model"
            )
        return canonical

    def capabilities_of(self, name: str) -> frozenset[Capability]:
        return self._deployments.pools[name].members[0].provider.capabilities

    def names(self) -> list[str]:
        return list(self._config.models)

    def describe(self) -> list[dict[str, Any]]:
        described = []
        for name, config in self._config.models.items():
            pool = self._deployments.pools[name]
            provider = pool.members[0].provider
            entry: dict[str, Any] = {
                "name": name,
                "kind": "generation",
                "provider": config.provider,
                "aliases": list(config.aliases),
                "fallbacks": list(config.fallbacks),
                "capabilities": sorted(c.value for c in provider.capabilities),
                "context_length": config.context_length,
                "default": name == self._aliases.get(self._settings.llm_default_model),
            }
            if config.deployments:
                entry["strategy"] = pool.strategy_name
                entry["deployments"] = [member.name for member in pool.members]
            if name in self._local:
                entry.update(self._local.describe(name))
            described.append(entry)
        return described

    # -- routing ----------------------------------------------------------------------------------------
    def route(self, model: str | None, request: GenerationRequest, fallbacks: list[str] | None = None) -> Route:
        """Resolve and check the request before any work starts (errors here are plain 4xx)."""
        primary = self.resolve(model)
        limit = self._settings.llm_max_prompt_chars
        if request.prompt == "":
            raise BadRequestError("prompt: is empty; send the text the model should continue", param="prompt")
        chars = request.prompt_chars()
        if chars > limit:
            raise PromptTooLongError(
                f"the prompt is {chars} characters; LLM_MAX_PROMPT_CHARS is {limit}",
                param="messages" if request.messages is not None else "prompt",
            )
        if request.messages is not None and len(request.messages) > self._settings.llm_max_messages:
            raise BadRequestError(
                f"{len(request.messages)} messages; LLM_MAX_MESSAGES is {self._settings.llm_max_messages}",
                param="messages",
            )
        request.max_tokens = min(request.max_tokens, self._settings.llm_max_tokens_per_request)
        names = [primary]
        # Request-given fallbacks name configured models only: a request can never point a provider at a URL.
        if fallbacks is not None and len(fallbacks) > 5:
            raise BadRequestError("fallbacks: at most 5 models", param="fallbacks")
        extra = fallbacks if fallbacks is not None else self._config.models[primary].fallbacks
        for name in extra:
            canonical = self.resolve(name)
            if canonical not in names:
                names.append(canonical)
        needed = _needed_capabilities(request)
        pools = [self._deployments.pools[n] for n in names]
        groups = tuple(tuple(pool.order(request)) for pool in pools if needed <= pool.members[0].provider.capabilities)
        if not groups:
            missing = needed - pools[0].members[0].provider.capabilities
            what = ", ".join(_CAPABILITY_WORDS.get(c, c.value) for c in sorted(missing))
            param = "tools" if Capability.FUNCTION_CALLING in missing else None
            raise UnsupportedFeatureError(
                f"model '{primary}' does not support {what}, and none of its fallbacks does", param=param
            )
        return Route(primary, groups)

    async def generate_with_fallback(
        self, model: str | None, request: GenerationRequest, fallbacks: list[str] | None = None
    ) -> tuple[str, Completion]:
        route = self.route(model, request, fallbacks)
        return await self._first_success(route, lambda d, lease: self._deployments.generate_on(d, request, lease))

    async def stream_with_fallback(
        self, model: str | None, request: GenerationRequest, fallbacks: list[str] | None = None
    ) -> tuple[str, AsyncIterator[Chunk]]:
        """Start a stream on the first deployment that produces a first chunk; later errors end the stream."""
        route = self.route(model, request, fallbacks)

        async def first_chunk(deployment: Deployment, lease: str | None) -> tuple[Chunk, AsyncIterator[Chunk]]:
            chunks = self._deployments.stream_on(deployment, request, lease)
            try:
                return await anext(chunks), chunks
            except StopAsyncIteration:
                await chunks.aclose()  # type: ignore[attr-defined]
                raise ProviderError(f"'{deployment.name}' ended its stream without sending anything") from None
            except BaseException:
                await chunks.aclose()  # type: ignore[attr-defined]
                raise

        name, (first, rest) = await self._first_success(route, first_chunk)
        return name, _prepend(first, rest)

    async def _first_success(
        self, route: Route, call: Callable[[Deployment, str | None], Awaitable[T]]
    ) -> tuple[str, T]:
        """(the model that answered, its answer)."""
        last_error: AppError | None = None
        previous: Deployment | None = None
        for group in route.groups:
            pending = list(group)
            while pending:
                try:
                    deployment, lease = await self._admit(pending)
                except OverloadedError as exc:  # every deployment left stayed at its limits: the next model
                    last_error = exc
                    break
                pending.remove(deployment)
                if previous is not None:
                    previous.stats.fallbacks += 1
                    logger.info("moving on from {} to {}", previous.name, deployment.name)
                previous = deployment
                # Local models have their own state and admission control: a failure there moves on at once, as
                # does one on a deployment whose model has others left. Otherwise bounded retries.
                local = deployment.provider.local
                attempts = 1 if local or pending else self._settings.llm_retries + 1
                for attempt in range(attempts):
                    if attempt:
                        try:
                            _, lease = await self._admit([deployment])
                        except OverloadedError as exc:
                            last_error = exc
                            break
                    if not local and not deployment.breaker.allow():
                        await _give_back(deployment, lease)
                        last_error = CircuitOpenError(
                            f"'{deployment.name}' is failing; its circuit is open for another "
                            f"{deployment.breaker.retry_in():.0f} s",
                            retry_after=deployment.breaker.retry_in(),
                        )
                        break
                    deployment.stats.calls += 1
                    started = time.perf_counter()
                    try:
                        result = await call(deployment, lease)
                    except asyncio.CancelledError:
                        deployment.breaker.abandon()
                        raise
                    except AppError as exc:
                        record_upstream(time.perf_counter() - started)
                        self._metrics.observe_provider(deployment.name, False, time.perf_counter() - started)
                        deployment.stats.failures += 1
                        if not exc.retryable:
                            deployment.breaker.record_success()  # the deployment answered; the request was at fault
                            raise
                        if not local:
                            deployment.breaker.record_failure()
                        last_error = exc
                        wait = self._retry_wait(exc, attempt)
                        if attempt == attempts - 1 or wait is None:
                            break
                        deployment.stats.retries += 1
                        await asyncio.sleep(wait)
                        continue
                    record_upstream(time.perf_counter() - started)
                    self._metrics.observe_provider(deployment.name, True, time.perf_counter() - started)
                    if not local:
                        deployment.breaker.record_success()
                    if deployment.name != deployment.model:
                        note_served(deployment.name)
                    return deployment.model, result
        assert last_error is not None
        if len(route.chain) > 1:
            last_error.details.setdefault("tried", [d.name for d in route.chain])
        raise last_error

    async def _admit(self, candidates: list[Deployment]) -> tuple[Deployment, str | None]:
        """The first candidate whose limits admit a request now, with its lease (None: it has no limits); when
        every one is at its limits, wait for one, at most LLM_QUEUE_TIMEOUT."""
        deadline: float | None = None
        while True:
            for deployment in candidates:
                if deployment.limits is None:
                    return deployment, None
                lease = await deployment.limits.acquire()
                if lease is not None:
                    return deployment, lease
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._settings.llm_queue_timeout
            elif now >= deadline:
                names = ", ".join(d.name for d in candidates)
                raise OverloadedError(
                    f"'{candidates[0].model}': every deployment left ({names}) stayed at its max_parallel, rpm or "
                    f"tpm for {self._settings.llm_queue_timeout:g} s (LLM_QUEUE_TIMEOUT)",
                    retry_after=5,
                )
            await asyncio.sleep(LIMIT_POLL_SECONDS)

    def _retry_wait(self, exc: AppError, attempt: int) -> float | None:
        """Seconds to wait before retrying the same deployment, or None to move on to the next one."""
        if exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= self._settings.llm_retry_max_wait else None
        backoff: float = self._settings.llm_retry_backoff * 2.0**attempt
        return backoff * (0.5 + random.random() / 2)


_CAPABILITY_WORDS = {
    Capability.FUNCTION_CALLING: "tools (function calling)",
    Capability.CHAT: "chat messages",
    Capability.TEXT_GENERATION: "raw prompts",
}


def _needed_capabilities(request: GenerationRequest) -> frozenset[Capability]:
    needed = {Capability.CHAT if request.messages is not None else Capability.TEXT_GENERATION}
    if request.tools and request.tool_choice != "none":
        needed.add(Capability.FUNCTION_CALLING)
    return frozenset(needed)


async def _give_back(deployment: Deployment, lease: str | None) -> None:
    if lease is not None and deployment.limits is not None:
        await deployment.limits.release(lease, 0)


async def _prepend(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]

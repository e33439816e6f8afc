"""Embedding models: lifecycle, per-text cache, micro-batched encoding, cosine similarity."""

from __future__ import annotations

import asyncio
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sop_llm.infra.cache import Cache
from sop_llm.infra.errors import BadRequestError, ModelNotFoundError, ProviderNotFoundError, UnsupportedFeatureError
from sop_llm.infra.model_config import ConfigError, EmbeddingModelConfig, ServiceConfig
from sop_llm.infra.redis_keys import embedding_key
from sop_llm.infra.settings import Settings
from sop_llm.providers.base import EmbeddingProvider, RerankProvider
from sop_llm.providers.registry import embedding_provider, rerank_provider
from sop_llm.services.embeddings.batcher import EmbeddingBatcher, TokenizingEncoder
from sop_llm.services.embeddings.span import embedding_span, failed
from sop_llm.services.local.load_state import LoadState, ModelState
from sop_llm.services.local.memory_guard import check_memory

InputType = Literal["query", "passage"]
if TYPE_CHECKING:
    import numpy as np

_TOKENS = struct.Struct("<i")


@dataclass
class Embeddings:
    model: str
    vectors: np.ndarray  # [n, dims] float32, L2-normalised
    tokens: int


@dataclass
class RankedItem:
    index: int
    score: float


class EmbeddingModel:
    """An embedding model, or a reranker (kind `rerank`: a cross-encoder, configured and loaded the same way)."""

    def __init__(self, name: str, config: EmbeddingModelConfig, provider: EmbeddingProvider | RerankProvider) -> None:
        self.name = name
        self.config = config
        self.provider = provider
        self.load_state = LoadState(name)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{name}")
        self.batcher: EmbeddingBatcher | None = None

    @property
    def kind(self) -> Literal["embedding", "rerank"]:
        return "rerank" if isinstance(self.provider, RerankProvider) else "embedding"


class EmbeddingManager:
    def __init__(self, settings: Settings, config: ServiceConfig, cache: Cache) -> None:
        self._settings = settings
        self._cache = cache
        self._models: dict[str, EmbeddingModel] = {}
        self._aliases: dict[str, str] = {}
        self._providers = config.providers
        for name, model_config in config.embeddings.items():
            self.add(name, model_config)

    def add(self, name: str, model_config: EmbeddingModelConfig) -> None:
        """Serve `name` (from embeddings.yaml, or registered while the service runs: it then loads on its first
        request). Configured names and aliases keep theirs."""
        provider_config = self._providers[model_config.provider]
        try:
            cls = rerank_provider(provider_config.type, model_config.backend) or embedding_provider(
                provider_config.type, model_config.backend
            )
        except ProviderNotFoundError as exc:
            where = f"{self._settings.config_dir / 'embeddings.yaml'}: embeddings.{name}.backend"
            raise ConfigError(f"{where}: {exc.message}") from exc
        self._models[name] = EmbeddingModel(name, model_config, cls(name, model_config, provider_config))
        for label in (name, *model_config.aliases):
            self._aliases.setdefault(label, name)

    async def remove(self, name: str) -> None:
        """Stop serving `name`: unload it and forget it and its aliases."""
        await self.unload(name)
        model = self._models.pop(name)
        model.executor.shutdown(wait=False, cancel_futures=True)
        for label in [label for label, canonical in self._aliases.items() if canonical == name]:
            del self._aliases[label]

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        for model in self._models.values():
            if model.config.load_on_startup:
                self.load(model.name)

    def load(self, name: str) -> ModelState:
        model = self.get(name)
        return model.load_state.start_load(lambda: self._load(model))

    async def _load(self, model: EmbeddingModel) -> None:
        check_memory(self._settings.llm_memory_threshold)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(model.executor, model.provider.load_blocking)
        if not isinstance(model.provider, EmbeddingProvider):
            return  # a reranker has no batcher: the rerank service scores on the model's worker thread
        split = model.provider if isinstance(model.provider, TokenizingEncoder) else None
        batcher = EmbeddingBatcher(
            model.provider.encode_blocking,
            model.executor,
            batch_size=self._settings.embedding_batch_size,
            wait_s=self._settings.embedding_batch_wait_ms / 1000,
            max_queue=self._settings.embedding_max_queue,
            tokenize=split.tokenize_blocking if split else None,
            forward=split.forward_blocking if split else None,
        )
        batcher.start()
        model.batcher = batcher

    async def unload(self, name: str) -> None:
        model = self.get(name)
        await model.load_state.cancel_load()
        if model.batcher is not None:
            await model.batcher.aclose()
            model.batcher = None
        await asyncio.get_running_loop().run_in_executor(model.executor, model.provider.close_blocking)
        model.load_state.state = ModelState.UNLOADED

    async def aclose(self) -> None:
        for name in self._models:
            await self.unload(name)
        for model in self._models.values():
            model.executor.shutdown(wait=False, cancel_futures=True)

    # -- lookup ----------------------------------------------------------------------------------------
    def resolve(self, name: str | None) -> str:
        wanted = name or self._settings.llm_default_embedding_model
        canonical = self._aliases.get(wanted)
        if canonical is None:
            raise ModelNotFoundError(
                f"embedding model '{wanted}' does not exist; available: {sorted(self._aliases)}",
                param="model",
            )
        return canonical

    def get(self, name: str | None) -> EmbeddingModel:
        return self._models[self.resolve(name)]

    def names(self) -> list[str]:
        return list(self._models)

    def default_names(self) -> list[str]:
        return [m.name for m in self._models.values() if m.config.load_on_startup]

    def describe(self) -> list[dict[str, Any]]:
        described = []
        for model in self._models.values():
            entry: dict[str, Any] = {
                "name": model.name,
                "kind": model.kind,
                "provider": model.config.provider,
                "aliases": list(model.config.aliases),
                **model.load_state.describe(),
            }
            if model.load_state.state is ModelState.READY:
                if isinstance(model.provider, EmbeddingProvider):
                    entry["dimensions"] = model.provider.dimensions
                entry["max_input_tokens"] = model.provider.max_input_tokens
            if model.batcher is not None:
                stats = model.batcher.stats
                entry["stats"] = {
                    "batches": stats.batches,
                    "texts": stats.texts,
                    "max_batch": stats.max_batch,
                    "queued": stats.queued,
                    "tokens": stats.tokens,
                    "padding": stats.padding,
                }
            described.append(entry)
        return described

    async def ready(self, model: EmbeddingModel) -> None:
        """Return once `model` is loaded: an unloaded one loads now (concurrent requests share the load), waited
        for at most MODEL_LOAD_TIMEOUT."""
        if model.load_state.state is ModelState.UNLOADED:
            self.load(model.name)
        await model.load_state.wait(self._settings.model_load_timeout)
        model.load_state.require_ready()

    # -- encoding --------------------------------------------------------------------------------------
    async def embed(self, model_name: str | None, texts: list[str], input_type: InputType | None = None) -> Embeddings:
        model = self.get(model_name)
        if not isinstance(model.provider, EmbeddingProvider):
            raise UnsupportedFeatureError(
                f"'{model.name}' is a reranker (a cross-encoder): it scores documents against a query on /v1/rerank "
                "and produces no embeddings; name an embedding model",
                param="model",
            )
        await self.ready(model)
        if not texts:
            raise BadRequestError("input must contain at least one text", param="input")
        if len(texts) > self._settings.embedding_max_inputs:
            raise BadRequestError(
                f"too many inputs: {len(texts)} > EMBEDDING_MAX_INPUTS={self._settings.embedding_max_inputs}; "
                "split the request",
                param="input",
            )
        for i, text in enumerate(texts):
            if not text:
                raise BadRequestError(f"input[{i}] is an empty string; every input must have text", param="input")
        prefix = self._prefix(model.config, input_type)
        prepared = [prefix + t for t in texts] if prefix else texts
        keys = [embedding_key(model.name, text) for text in prepared]
        cached = await self._cache.get_many(keys)
        missing = [i for i, hit in enumerate(cached) if hit is None]
        import numpy as np  # not at module level: numpy is imported by the first request, not at startup

        vectors = np.empty((len(texts), model.provider.dimensions), dtype=np.float32)
        tokens = 0
        for i, hit in enumerate(cached):
            if hit is not None:
                tokens += _TOKENS.unpack_from(hit)[0]
                vectors[i] = np.frombuffer(hit, dtype=np.float32, offset=_TOKENS.size)
        if missing:
            assert model.batcher is not None
            span = embedding_span(model.name, model.provider, len(missing))
            try:
                fresh, fresh_tokens = await model.batcher.submit([prepared[i] for i in missing])
                if span is not None:
                    span.set({"gen_ai.usage.input_tokens": sum(fresh_tokens)})
            except BaseException as exc:
                if span is not None:
                    failed(span, exc)
                raise
            finally:
                if span is not None:
                    span.end()
            vectors[missing] = fresh
            tokens += sum(fresh_tokens)
            await self._cache.set_many(
                (keys[i], _TOKENS.pack(n) + fresh[row].tobytes())
                for row, (i, n) in enumerate(zip(missing, fresh_tokens, strict=True))
            )
        return Embeddings(model=model.name, vectors=vectors, tokens=tokens)

    @staticmethod
    def _prefix(config: EmbeddingModelConfig, input_type: InputType | None) -> str:
        kind = input_type or config.default_input_type
        return config.query_prefix if kind == "query" else config.passage_prefix

    async def similarity(self, model_name: str | None, text_a: str, text_b: str) -> tuple[str, float]:
        result = await self.embed(model_name, [text_a, text_b])
        return result.model, float(result.vectors[0] @ result.vectors[1])

    async def rank(
        self, model_name: str | None, query: str, candidates: list[str], top_k: int | None
    ) -> tuple[str, list[RankedItem]]:
        if not candidates:
            raise BadRequestError("candidates must contain at least one text", param="candidates")
        query_vec = await self.embed(model_name, [query], input_type="query")
        cand_vecs = await self.embed(model_name, candidates, input_type="passage")
        scores = cand_vecs.vectors @ query_vec.vectors[0]
        order = (-scores).argsort(kind="stable")
        if top_k is not None:
            order = order[:top_k]
        return query_vec.model, [RankedItem(int(i), float(scores[i])) for i in order]

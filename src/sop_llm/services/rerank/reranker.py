"""Rerank: order documents by their relevance to a query, with a cross-encoder or with any embedding model.

A cross-encoder (a model of kind `rerank` in embeddings.yaml) reads each (query, document) pair together on the
model's own worker thread, never on the event loop, in chunks of EMBEDDING_BATCH_SIZE pairs so that concurrent
requests take turns. An embedding model embeds the query and the documents through the embedding path (its
micro-batcher and per-text cache) and scores each document by cosine similarity with the query.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sop_llm.infra.errors import BadRequestError, ModelNotFoundError, OverloadedError, UnsupportedFeatureError
from sop_llm.infra.settings import Settings
from sop_llm.providers.base import RerankProvider
from sop_llm.services.embeddings.manager import EmbeddingManager, EmbeddingModel, RankedItem
from sop_llm.services.routing.router import ModelRouter

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Ranking:
    model: str
    results: list[RankedItem]  # the most relevant first
    tokens: int


class Reranker:
    def __init__(self, settings: Settings, embeddings: EmbeddingManager, generation: ModelRouter) -> None:
        self._settings = settings
        self._embeddings = embeddings
        self._generation = generation
        self._queued: Counter[str] = Counter()  # pairs waiting or being scored, per cross-encoder

    def resolve(self, name: str | None) -> str:
        """The canonical name of the model that answers (the default embedding model when `name` is None); 404 for
        a name nobody knows, 400 for a generation model."""
        try:
            return self._embeddings.resolve(name)
        except ModelNotFoundError:
            if name is None:
                raise
        wanted = name
        rerankers = sorted(self._embeddings.names())
        try:
            self._generation.resolve(wanted)
        except ModelNotFoundError:
            raise ModelNotFoundError(
                f"model '{wanted}' does not exist; rerank takes a cross-encoder or an embedding model: {rerankers}",
                param="model",
            ) from None
        raise UnsupportedFeatureError(
            f"'{wanted}' is a generation model and cannot rerank; name a cross-encoder or an embedding model: "
            f"{rerankers}",
            param="model",
        )

    async def rerank(self, model_name: str | None, query: str, documents: list[str], top_n: int | None) -> Ranking:
        model = self._embeddings.get(self.resolve(model_name))
        self._check(query, documents, top_n)
        await self._embeddings.ready(model)
        if isinstance(model.provider, RerankProvider):
            scores, tokens = await self._cross_encode(model, model.provider, query, documents)
        else:
            scores, tokens = await self._by_embeddings(model.name, query, documents)
        order = (-scores).argsort(kind="stable")[:top_n]  # ties keep the documents' order
        return Ranking(model.name, [RankedItem(int(i), float(scores[i])) for i in order], tokens)

    def _check(self, query: str, documents: list[str], top_n: int | None) -> None:
        if not query.strip():
            raise BadRequestError("query is empty; send the text to rank the documents against", param="query")
        if not documents:
            raise BadRequestError("documents is empty; send at least one document to rank", param="documents")
        limit = self._settings.embedding_max_inputs
        if len(documents) > limit:
            raise BadRequestError(
                f"too many documents: {len(documents)} > {limit} (EMBEDDING_MAX_INPUTS); rank them in several "
                "requests and merge the results by relevance_score",
                param="documents",
            )
        for i, document in enumerate(documents):
            if not document.strip():
                raise BadRequestError(f"documents[{i}] is empty; every document needs text", param="documents")
        if top_n is not None and top_n < 1:
            raise BadRequestError(
                f"top_n is {top_n}; it must be at least 1 (omit it to get every document)", param="top_n"
            )

    async def _cross_encode(
        self, model: EmbeddingModel, provider: RerankProvider, query: str, documents: list[str]
    ) -> tuple[np.ndarray, int]:
        waiting = self._queued[model.name]
        if waiting + len(documents) > self._settings.embedding_max_queue:
            raise OverloadedError(
                f"the rerank queue of '{model.name}' is full ({waiting} pairs waiting); retry shortly",
                retry_after=1,
            )
        self._queued[model.name] += len(documents)
        loop = asyncio.get_running_loop()
        step = self._settings.embedding_batch_size
        import numpy as np  # not at module level: numpy is imported by the first request, not at startup

        scores = np.empty(len(documents), dtype=np.float32)
        tokens = 0
        try:
            for start in range(0, len(documents), step):
                chunk = documents[start : start + step]
                chunk_scores, chunk_tokens = await loop.run_in_executor(
                    model.executor, provider.score_blocking, query, chunk
                )
                scores[start : start + len(chunk)] = chunk_scores
                tokens += sum(chunk_tokens)
        finally:
            self._queued[model.name] -= len(documents)
        return scores, tokens

    async def _by_embeddings(self, model: str, query: str, documents: list[str]) -> tuple[np.ndarray, int]:
        asked = await self._embeddings.embed(model, [query], input_type="query")
        passages = await self._embeddings.embed(model, documents, input_type="passage")
        scores: np.ndarray = passages.vectors @ asked.vectors[0]  # both L2-normalised: cosine similarity
        return scores, asked.tokens + passages.tokens

"""Model names as Ollama's clients write them: the service's names and aliases, optionally tagged `:latest` (what
`/api/tags` lists them as, and what clients send back). An unknown name is Ollama's 404; a model of the other kind
(an embedding model asked to chat, a chat model asked to embed) is Ollama's 400 "does not support"."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Literal

from sop_llm.infra.errors import ModelNotFoundError, UnsupportedFeatureError
from sop_llm.services.container import Services

LATEST = ":latest"


def listed_name(name: str) -> str:
    """The name `/api/tags` shows: with Ollama's default tag unless it has a tag of its own."""
    return name if ":" in name else name + LATEST


def _spellings(requested: str) -> Iterator[str]:
    yield requested
    if requested.endswith(LATEST) and len(requested) > len(LATEST):
        yield requested.removesuffix(LATEST)


def _resolve(resolve: Callable[[str], str], requested: str) -> str | None:
    for name in _spellings(requested):
        try:
            return resolve(name)
        except ModelNotFoundError:
            continue
    return None


def not_found(requested: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"model {json.dumps(requested)} not found, try pulling it first", param="model")


def generation_model(services: Services, requested: str, action: str) -> str:
    """The canonical name of the chat model `requested` names; `action` ("chat", "generate") for the refusal."""
    name = _resolve(services.router.resolve, requested)
    if name is not None:
        return name
    if _resolve(services.embeddings.resolve, requested) is not None:
        raise UnsupportedFeatureError(f"{json.dumps(requested)} does not support {action}", param="model")
    raise not_found(requested)


def embedding_model(services: Services, requested: str) -> str:
    name = _resolve(services.embeddings.resolve, requested)
    if name is not None:
        return name
    if _resolve(services.router.resolve, requested) is not None:
        raise UnsupportedFeatureError(f"{json.dumps(requested)} does not support embeddings", param="model")
    raise not_found(requested)


def any_model(services: Services, requested: str) -> tuple[Literal["generation", "embedding"], str]:
    """("generation" | "embedding", canonical name) of a model of either kind."""
    name = _resolve(services.router.resolve, requested)
    if name is not None:
        return "generation", name
    name = _resolve(services.embeddings.resolve, requested)
    if name is not None:
        return "embedding", name
    raise not_found(requested)

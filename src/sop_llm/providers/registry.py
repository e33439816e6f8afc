"""Provider registry: `@register_provider("name")` on a class, looked up by the type named in providers.yaml."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TypeVar

from sop_llm.infra.errors import ProviderNotFoundError
from sop_llm.providers.base import EmbeddingProvider, GenerationProvider, RerankProvider

ProviderClass = type[GenerationProvider] | type[EmbeddingProvider] | type[RerankProvider]
_registry: dict[str, ProviderClass] = {}
# Other implementations of an embedding or rerank provider type, chosen by the model's `backend:` (e.g. onnx).
_backends: dict[tuple[str, str], type[EmbeddingProvider] | type[RerankProvider]] = {}
_T = TypeVar("_T", bound=ProviderClass)
_E = TypeVar("_E", bound=type[EmbeddingProvider] | type[RerankProvider])


def register_provider(name: str) -> Callable[[_T], _T]:
    def decorator(cls: _T) -> _T:
        if name in _registry and _registry[name] is not cls:
            raise ValueError(f"provider type '{name}' is registered twice")
        _registry[name] = cls
        return cls

    return decorator


def register_backend(provider_type: str, backend: str) -> Callable[[_E], _E]:
    """Register another implementation of an embedding or rerank provider type; models pick it with
    `backend: <name>`."""

    def decorator(cls: _E) -> _E:
        if _backends.get((provider_type, backend), cls) is not cls:
            raise ValueError(f"backend '{backend}' of provider type '{provider_type}' is registered twice")
        _backends[(provider_type, backend)] = cls
        return cls

    return decorator


def discover() -> None:
    """Import every provider module (`sop_llm.providers.<folder>.<module>`) so their registrations run; they import
    no heavy code. A provider's own sub-package (the llama.cpp batch scheduler) is its internals, imported by the
    provider when a model loads, not here."""
    import sop_llm.providers as package

    for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        if module.name.count(".") <= 3:
            importlib.import_module(module.name)


def provider_types() -> set[str]:
    discover()
    return set(_registry)


def generation_provider(name: str) -> type[GenerationProvider]:
    cls = _registry.get(name)
    if cls is None or not issubclass(cls, GenerationProvider):
        raise ProviderNotFoundError(f"no generation provider of type '{name}' is registered")
    return cls


def embedding_provider(name: str, backend: str = "torch") -> type[EmbeddingProvider]:
    """The type's own class for the default backend (`torch`), else the class registered for that backend."""
    cls = _registry.get(name)
    if cls is None or not issubclass(cls, EmbeddingProvider):
        raise ProviderNotFoundError(f"no embedding provider of type '{name}' is registered")
    chosen = _with_backend(name, cls, backend)
    assert issubclass(chosen, EmbeddingProvider)
    return chosen


def rerank_provider(name: str, backend: str = "torch") -> type[RerankProvider] | None:
    """The reranker registered as type `name` (or its `backend` implementation), or None when that type is not a
    reranker."""
    cls = _registry.get(name)
    if cls is None or not issubclass(cls, RerankProvider):
        return None
    chosen = _with_backend(name, cls, backend)
    assert issubclass(chosen, RerankProvider)
    return chosen


def _with_backend(name: str, cls: ProviderClass, backend: str) -> ProviderClass:
    if backend == "torch":
        return cls
    if (name, backend) in _backends:
        return _backends[(name, backend)]
    offered = sorted(b for t, b in _backends if t == name)
    raise ProviderNotFoundError(f"provider type '{name}' has no '{backend}' backend (backends: {['torch', *offered]})")

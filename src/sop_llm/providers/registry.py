"""Provider registry: `@register_provider("name")` on a class, looked up by the type named in providers.yaml."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TypeVar

from sop_llm.infra.errors import ProviderNotFoundError
from sop_llm.providers.base import EmbeddingProvider, GenerationProvider

ProviderClass = type[GenerationProvider] | type[EmbeddingProvider]
_registry: dict[str, ProviderClass] = {}
_T = TypeVar("_T", bound=ProviderClass)


def register_provider(name: str) -> Callable[[_T], _T]:
    def decorator(cls: _T) -> _T:
        if name in _registry and _registry[name] is not cls:
            raise ValueError(f"provider type '{name}' is registered twice")
        _registry[name] = cls
        return cls

    return decorator


def discover() -> None:
    """Import every module under `sop_llm.providers` so their registrations run (they import no heavy code)."""
    import sop_llm.providers as package

    for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        importlib.import_module(module.name)


def provider_types() -> set[str]:
    discover()
    return set(_registry)


def generation_provider(name: str) -> type[GenerationProvider]:
    cls = _registry.get(name)
    if cls is None or not issubclass(cls, GenerationProvider):
        raise ProviderNotFoundError(f"no generation provider of type '{name}' is registered")
    return cls


def embedding_provider(name: str) -> type[EmbeddingProvider]:
    cls = _registry.get(name)
    if cls is None or not issubclass(cls, EmbeddingProvider):
        raise ProviderNotFoundError(f"no embedding provider of type '{name}' is registered")
    return cls

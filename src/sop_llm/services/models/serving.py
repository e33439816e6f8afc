"""A pulled model as the configuration the service already serves models from (what models.yaml and
embeddings.yaml would say about it).

A GGUF model becomes a `ModelConfig` on the providers.yaml provider of type `llamacpp`, with the context length its
file declares, capped (a model trained for 128k tokens would otherwise ask for gigabytes of KV cache); an embedding
model an `EmbeddingModelConfig` on the `sentence_transformers` provider; a cross-encoder one on the `cross_encoder`
provider, as rerankers are configured. None is loaded at startup: they load when first asked for. A model served
under its spec also answers to Ollama's `hf.co/<spec>`.
"""

from __future__ import annotations

from collections.abc import Mapping

from sop_llm.infra.model_config import ConfigError, EmbeddingModelConfig, ModelConfig, ProviderConfig
from sop_llm.services.models.model import PulledModelRow

# The context a GGUF model is served with at most, unless configured otherwise.
MAX_CONTEXT_LENGTH = 8192
# The context of a GGUF model that does not declare one (ModelConfig's default).
UNKNOWN_CONTEXT_LENGTH = 2048
PROVIDER_TYPES: dict[str, str] = {
    "gguf": "llamacpp",
    "embedding": "sentence_transformers",
    "rerank": "cross_encoder",
}


def serving_config(
    row: PulledModelRow, providers: Mapping[str, ProviderConfig], *, max_context_length: int = MAX_CONTEXT_LENGTH
) -> ModelConfig | EmbeddingModelConfig:
    """The configuration that serves `row`; `providers` are the configured ones (providers.yaml)."""
    provider = provider_for(row.kind, providers)
    aliases = [f"hf.co/{row.name}"] if row.name == row.spec else []
    if row.kind == "gguf":
        context = min(row.context_length or UNKNOWN_CONTEXT_LENGTH, max_context_length)
        return ModelConfig(
            provider=provider, model=row.path, aliases=aliases, context_length=max(context, 64), load_on_startup=False
        )
    return EmbeddingModelConfig(provider=provider, model=row.path, aliases=aliases, load_on_startup=False)


def provider_for(kind: str, providers: Mapping[str, ProviderConfig]) -> str:
    """The name of the first configured provider that serves models of `kind`."""
    if kind not in PROVIDER_TYPES:
        raise ConfigError(f"pulled models of kind '{kind}' are not served here; kinds: {sorted(PROVIDER_TYPES)}")
    wanted = PROVIDER_TYPES[kind]
    for name, provider in providers.items():
        if provider.type == wanted:
            return name
    raise ConfigError(
        f"providers.yaml defines no provider of type '{wanted}', which serves pulled {kind} models; add one, "
        f"e.g. `{wanted.replace('_', '-')}: {{type: {wanted}}}`"
    )

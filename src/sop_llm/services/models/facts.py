"""What a pulled model says about itself, for serving it with sensible defaults.

A GGUF file carries its architecture, context length (`<arch>.context_length`) and chat template
(`tokenizer.chat_template`) in the key-value header before its tensors; only that header is read, and arrays (the
tokenizer's vocabulary) are skipped without being decoded. An embedding model's dimension comes from its
sentence-transformers modules — the last Dense layer's `out_features`, else the pooling layer's input dimension
times its pooling modes — or from `config.json` (`hidden_size`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sop_llm.infra.errors import UnsupportedModelError
from sop_llm.infra.gguf import GGUFHeaderError, read_metadata

_LEGACY_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """Each is None when the model does not say."""

    architecture: str | None = None
    context_length: int | None = None
    chat_template: str | None = None
    dimensions: int | None = None


def gguf_facts(path: Path) -> ModelFacts:
    """Architecture, context length and chat template from a GGUF file's header."""
    try:
        metadata = read_metadata(path)
    except (GGUFHeaderError, OSError) as exc:
        raise UnsupportedModelError(f"cannot read the GGUF header of {path.name}: {exc}") from exc
    architecture = metadata.get("general.architecture")
    architecture = architecture if isinstance(architecture, str) else None
    context = metadata.get(f"{architecture}.context_length")
    template = metadata.get("tokenizer.chat_template")
    return ModelFacts(
        architecture=architecture,
        context_length=int(context) if isinstance(context, int) and context > 0 else None,
        chat_template=template if isinstance(template, str) and template.strip() else None,
    )


def embedding_facts(folder: Path) -> ModelFacts:
    """The dimension of the embeddings a sentence-transformers model (in `folder`) produces."""
    modules = _json(folder / "modules.json")
    dimensions: int | None = None
    for module in modules if isinstance(modules, list) else []:
        if not isinstance(module, dict):
            continue
        kind, config = str(module.get("type", "")), _json(folder / str(module.get("path", "")) / "config.json")
        if not isinstance(config, dict):
            continue
        if kind.endswith("Dense") and isinstance(config.get("out_features"), int):
            dimensions = config["out_features"]
        elif kind.endswith("Pooling"):
            dimensions = _pooling_dimensions(config) or dimensions
    if dimensions is None:
        config = _json(folder / "config.json")
        if isinstance(config, dict):
            size = config.get("hidden_size") or config.get("d_model") or config.get("n_embd")
            dimensions = size if isinstance(size, int) else None
    return ModelFacts(dimensions=dimensions)


def model_facts(kind: str, path: Path) -> ModelFacts:
    """The facts of a pulled model of `kind` served from `path`."""
    if kind == "gguf":
        return gguf_facts(path)
    if kind == "embedding":
        return embedding_facts(path)
    return ModelFacts()


def _pooling_dimensions(config: dict[str, Any]) -> int | None:
    size = config.get("embedding_dimension") or config.get("word_embedding_dimension")
    if not isinstance(size, int):
        return None
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        modes = 1
    elif isinstance(mode, list):
        modes = len(mode)
    else:
        modes = sum(1 for key in _LEGACY_POOLING_MODES if config.get(key) is True)
    return size * max(modes, 1)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None

"""From a spec to a pull plan: the repository's commit, the kind of model and exactly the files to download.

The kind follows from the repository: GGUF files make a `gguf` model (served by llama.cpp); `modules.json` or
`config_sentence_transformers.json` a sentence-transformers model — an `embedding` model, or a `rerank` one when
it declares itself a CrossEncoder; otherwise a `config.json` whose architecture ends in `ForSequenceClassification`
is a cross-encoder (`rerank`). Reading those few small configuration files goes through the same checked download
as the model's other files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sop_llm.infra.errors import UnsupportedModelError
from sop_llm.services.models.choice import (
    HubFile,
    gguf_models,
    is_sentence_transformers,
    pick_gguf,
    serving_files,
)
from sop_llm.services.models.hub import Listing
from sop_llm.services.models.model import ModelKind
from sop_llm.services.models.spec import ModelSpec

# Reads one small file of the repository (downloaded and checked into the cache) as JSON.
ReadJson = Callable[[HubFile], Any]


@dataclass(frozen=True, slots=True)
class PullPlan:
    """What a pull downloads. `serve`: the file a GGUF model is loaded from (the first part of a split one); None
    for the other kinds, which load from the snapshot folder."""

    spec: ModelSpec
    repo: str
    revision: str
    kind: ModelKind
    files: tuple[HubFile, ...]
    serve: str | None

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.files)


def plan_for(spec: ModelSpec, listing: Listing, read_json: ReadJson) -> PullPlan:
    """The plan for `spec` in the repository `listing` describes."""
    files = {file.path: file for file in listing.files}

    def plan(kind: ModelKind, chosen: tuple[HubFile, ...], serve: str | None = None) -> PullPlan:
        return PullPlan(spec, listing.repo, listing.revision, kind, chosen, serve)

    sentence_transformers = is_sentence_transformers(listing.files)
    if spec.choice is not None or (gguf_models(listing.files) and not sentence_transformers):
        model = pick_gguf(listing.repo, listing.files, spec.choice)
        return plan("gguf", model.files, model.files[0].path)
    if sentence_transformers:
        settings = _json_file(files, "config_sentence_transformers.json", read_json)
        model_type = settings.get("model_type") if isinstance(settings, dict) else None
        if model_type not in (None, "SentenceTransformer", "CrossEncoder"):
            raise UnsupportedModelError(
                f"{listing.repo} is a sentence-transformers {model_type}; embedding models and cross-encoders are"
                " served here"
            )
        modules = _json_file(files, "modules.json", read_json)
        listed = modules if isinstance(modules, list) else []
        folders = [str(module.get("path", "")) for module in listed if isinstance(module, dict)]
        kind: ModelKind = "rerank" if model_type == "CrossEncoder" else "embedding"
        return plan(kind, serving_files(listing.repo, listing.files, folders))
    config = _json_file(files, "config.json", read_json)
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if isinstance(architectures, list) and any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return plan("rerank", serving_files(listing.repo, listing.files))
    raise UnsupportedModelError(
        f"{listing.repo} holds no GGUF file, no sentence-transformers model and no cross-encoder "
        f"(architectures: {architectures or 'none'}); this service pulls those three kinds"
    )


def _json_file(files: dict[str, HubFile], name: str, read_json: ReadJson) -> Any:
    """The JSON content of the repository's file `name`, None when it has none."""
    return read_json(files[name]) if name in files else None


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"{path.name} of the model is not valid JSON: {exc}") from exc

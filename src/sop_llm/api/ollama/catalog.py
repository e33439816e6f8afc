"""The service's models as Ollama lists and shows them: `/api/tags` entries, `/api/ps` entries and `/api/show`
answers, built from the configuration, each model's state and its files (model_facts.py).

- Every chat model (local and remote) and every embedding model is listed, by its name tagged `:latest`; aliases
  are accepted everywhere but not listed.
- `size` is the model's files on disk (0 for a remote model); `digest` identifies the configured model and the
  file version it serves (a hash of the provider, the model id, the size and the modification time), not a
  content hash; `modified_at` is the file's time (the service's start for a remote model).
- `details.context_length` and, in `model_info`, `<architecture>.context_length` are the context the service
  serves (models.yaml `context_length`; an embedding model's input limit), which may be shorter than the one the
  file was trained for: clients size their prompts by it, and a prompt that does not fit is refused, never cut.
- `/api/ps` lists the local models that are loaded: `size` is the memory a chat model is counted to hold
  (estimated from its files, measured as it loaded; an embedding model's files), `expires_at` when its keep-alive
  ends if it stays idle (as far ahead as Ollama puts it for `keep_alive: -1` when it stays loaded for good),
  `size_vram` 0: the service runs on CPU.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sop_llm.api.ollama.model_facts import FileFacts, file_facts, model_path
from sop_llm.api.ollama.names import listed_name
from sop_llm.api.ollama.timestamps import NS_PER_S, of_epoch, rfc3339
from sop_llm.providers.types import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, Capability
from sop_llm.services.container import Services
from sop_llm.services.local.load_state import ModelState

Kind = Literal["generation", "embedding"]
FOREVER_NS = 2**63 - 1  # how far ahead Ollama puts the expiry of a model kept loaded for ever


@dataclass(frozen=True)
class Entry:
    name: str
    kind: Kind
    provider: str  # the provider type
    source: str  # the configured model id
    local: bool
    loaded: bool
    capabilities: list[str]
    context_length: int | None
    embedding_length: int | None
    facts: FileFacts
    path: str | None
    expires_in: float | None = None  # seconds until its keep-alive unloads it if it stays idle; None: never
    memory: int = 0  # bytes it holds once loaded, where measured


def _residence(services: Services, name: str) -> tuple[float | None, int]:
    """(seconds until it unloads when idle, bytes it holds) of a loaded local chat model, as its manager says."""
    described = services.local.describe(name)
    memory = described.get("memory") or {}
    held = max(int(memory.get("estimated_bytes") or 0), int(memory.get("measured_bytes") or 0))
    expires_in = described.get("expires_in_s")
    return (float(expires_in) if expires_in is not None else None), held


async def _generation(services: Services, name: str) -> Entry:
    config = services.config.models[name]
    local = name in services.local
    path = model_path(config.model) if local else None
    capabilities = ["completion"]
    if Capability.FUNCTION_CALLING in services.router.capabilities_of(name):
        capabilities.append("tools")
    loaded = local and services.local.state(name) is ModelState.READY
    expires_in, memory = _residence(services, name) if loaded else (None, 0)
    return Entry(
        name=name,
        kind="generation",
        provider=services.config.providers[config.provider].type,
        source=config.model,
        local=local,
        loaded=loaded,
        capabilities=capabilities,
        context_length=config.context_length,
        embedding_length=None,
        facts=await asyncio.to_thread(file_facts, path),
        path=path,
        expires_in=expires_in,
        memory=memory,
    )


async def _embedding(services: Services, described: dict[str, Any]) -> Entry:
    name = described["name"]
    config = services.config.embeddings[name]
    path = model_path(config.model)
    return Entry(
        name=name,
        kind="embedding",
        provider=services.config.providers[config.provider].type,
        source=config.model,
        local=True,
        loaded=described["state"] == ModelState.READY.value,
        capabilities=["embedding"],
        context_length=described.get("max_input_tokens"),
        embedding_length=described.get("dimensions"),
        facts=await asyncio.to_thread(file_facts, path),
        path=path,
    )


async def entries(services: Services) -> list[Entry]:
    listed = [await _generation(services, name) for name in services.router.names()]
    for described in services.embeddings.describe():
        if described["kind"] == "embedding":  # rerankers serve no Ollama route
            listed.append(await _embedding(services, described))
    return listed


async def entry(services: Services, kind: Kind, name: str) -> Entry:
    if kind == "generation":
        return await _generation(services, name)
    return await _embedding(services, next(d for d in services.embeddings.describe() if d["name"] == name))


def human_number(count: int) -> str:
    """A parameter count as Ollama writes it: 134.52M, 8B, 7.6B, 33K."""
    if count >= 1_000_000_000:
        value = count / 1_000_000_000
        return f"{value:.0f}B" if value.is_integer() else f"{value:.1f}B"
    if count >= 1_000_000:
        value = count / 1_000_000
        return f"{value:.0f}M" if value.is_integer() else f"{value:.2f}M"
    if count >= 1_000:
        return f"{count / 1_000:.0f}K"
    return str(count)


def details(item: Entry) -> dict[str, Any]:
    facts = item.facts
    shown: dict[str, Any] = {
        "parent_model": "",
        "format": facts.format,
        "family": facts.family,
        "families": [facts.family] if facts.family else None,
        "parameter_size": human_number(facts.parameter_count) if facts.parameter_count else "",
        "quantization_level": facts.quantization,
    }
    if item.context_length:
        shown["context_length"] = item.context_length
    if item.embedding_length:
        shown["embedding_length"] = item.embedding_length
    return shown


def digest(item: Entry) -> str:
    identity = f"{item.provider}\0{item.source}\0{item.facts.size}\0{item.facts.modified}"
    return hashlib.sha256(identity.encode()).hexdigest()


def _modified(item: Entry, services: Services) -> str:
    return of_epoch(item.facts.modified if item.facts.modified is not None else services.started_at)


def tag(item: Entry, services: Services) -> dict[str, Any]:
    listed = listed_name(item.name)
    return {
        "name": listed,
        "model": listed,
        "modified_at": _modified(item, services),
        "size": item.facts.size,
        "digest": digest(item),
        "details": details(item),
        "capabilities": item.capabilities,
    }


def running(item: Entry) -> dict[str, Any]:
    listed = listed_name(item.name)
    left = FOREVER_NS if item.expires_in is None else round(item.expires_in * NS_PER_S)
    return {
        "name": listed,
        "model": listed,
        "size": item.memory or item.facts.size,
        "digest": digest(item),
        "details": details(item),
        "expires_at": rfc3339(time.time_ns() + left),
        "size_vram": 0,
        "context_length": item.context_length or 0,
    }


def _parameters(item: Entry) -> list[tuple[str, Any]]:
    if item.kind != "generation":
        return []
    return [("num_ctx", item.context_length), ("temperature", DEFAULT_TEMPERATURE), ("top_p", DEFAULT_TOP_P)]


def _template(item: Entry, services: Services) -> str:
    if item.kind == "generation":
        override = services.config.models[item.name].options.get("chat_template")
        if isinstance(override, str):
            return override
    return item.facts.template


def _modelfile(item: Entry, template: str) -> str:
    source = Path(item.source).name if item.path is not None and item.source == item.path else item.source
    lines = [
        f'# Modelfile generated by sop-llm for "{item.name}": how the service serves it',
        f"FROM {source}",
    ]
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER {key} {value}" for key, value in _parameters(item)]
    if item.facts.license:
        lines.append(f'LICENSE """{item.facts.license}"""')
    return "\n".join(lines) + "\n"


def _model_info(item: Entry) -> dict[str, Any]:
    facts = item.facts
    info: dict[str, Any] = dict(facts.metadata)
    if facts.family:
        info["general.architecture"] = facts.family
        if item.context_length:
            info[f"{facts.family}.context_length"] = item.context_length
        if item.embedding_length:
            info[f"{facts.family}.embedding_length"] = item.embedding_length
    if facts.parameter_count:
        info["general.parameter_count"] = facts.parameter_count
    return info


def show(item: Entry, services: Services) -> dict[str, Any]:
    template = _template(item, services)
    shown: dict[str, Any] = {
        "modelfile": _modelfile(item, template),
        "parameters": "\n".join(f"{key:<30} {value}" for key, value in _parameters(item)),
        "template": template,
        "details": details(item),
        "model_info": _model_info(item),
        "capabilities": item.capabilities,
        "modified_at": _modified(item, services),
    }
    if item.facts.license:
        shown["license"] = item.facts.license
    return shown

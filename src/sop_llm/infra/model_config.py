"""The YAML definitions of models, embedding models and providers, validated at startup.

Errors name the file and the key, e.g. `config/models.yaml: models.smollm2.provider: ...`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from sop_llm.infra.units import parse_duration

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration file is missing or invalid; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    type: str = Field(description="registered provider type, e.g. llamacpp, openai, anthropic")
    base_url: str | None = Field(
        None, description="remote providers: the API's base URL (config only, never a request)"
    )
    api_key: SecretStr | None = Field(None, description="remote providers: use ${ENV_VAR} to keep it out of the file")
    timeout: float = Field(60.0, gt=0, description="remote providers: seconds per upstream request")
    options: dict[str, Any] = Field(default_factory=dict)


Strategy = Literal["least_outstanding", "latency", "weighted", "prefix_affinity"]


class DeploymentConfig(_Strict):
    """One node serving a model: a remote provider entry, with this node's own URL, key and limits."""

    provider: str = Field(description="an entry of providers.yaml of a remote type (openai, anthropic, ...)")
    name: str | None = Field(None, description="default: <model>@<position>, counted from 1")
    model: str | None = Field(None, description="the model id sent upstream; default: the model's `model`")
    base_url: str | None = Field(None, description="default: the provider entry's")
    api_key: SecretStr | None = Field(None, description="default: the provider entry's")
    timeout: float | None = Field(None, gt=0, description="default: the provider entry's")
    weight: float = Field(1.0, gt=0, description="share of the traffic (weighted) and tie-breaker (others)")
    max_parallel: int | None = Field(None, ge=1, description="requests in flight on this node at most")
    rpm: int | None = Field(None, ge=1, description="requests per minute on this node at most")
    tpm: int | None = Field(None, ge=1, description="tokens per minute on this node at most")


class ModelConfig(_Strict):
    provider: str
    model: str = Field(description="provider-specific id: embedded:<name>, a local path, or a hub id")
    deployments: list[DeploymentConfig] = Field(
        default_factory=list,
        description="several nodes serving this model; `provider` and `model` default to the first one's",
    )
    strategy: Strategy = Field(
        "least_outstanding",
        description="how a request picks one of the deployments: least_outstanding, latency, weighted, prefix_affinity",
    )
    aliases: list[str] = Field(default_factory=list)
    fallbacks: list[str] = Field(default_factory=list, description="models tried in order when this one fails")
    load_on_startup: bool = True
    context_length: int = Field(2048, ge=64)
    instances: int = Field(1, ge=1, le=16, description="independent model instances serving requests")
    scheduler: Literal["serial", "batched"] = Field(
        "batched",
        description="llamacpp: batched = one context decodes up to `parallel` requests together (continuous "
        "batching, callers in turn, interactive first); serial = each instance serves one request at a time",
    )
    parallel: int | None = Field(
        None,
        ge=1,
        le=64,
        description="scheduler batched: sequence slots, each with context_length tokens of KV cache; default: as "
        "many as fit in a quarter of the machine's memory, at most 8",
    )
    keep_alive: float | None = Field(
        None,
        description="seconds (or 5m, 1h) the model stays loaded when idle; negative: forever; default: forever for "
        "models loaded at startup, MODEL_KEEP_ALIVE for those loaded on demand",
    )
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @model_validator(mode="before")
    @classmethod
    def _from_first_deployment(cls, data: Any) -> Any:
        """A model defined by its deployments alone takes its provider and upstream id from the first one."""
        if isinstance(data, dict) and isinstance(data.get("deployments"), list) and data["deployments"]:
            first = data["deployments"][0]
            if isinstance(first, dict):
                data = {**data}
                data.setdefault("provider", first.get("provider"))
                data.setdefault("model", first.get("model") or first.get("provider"))
        return data

    @model_validator(mode="after")
    def _named_once(self) -> ModelConfig:
        names = [d.name for d in self.deployments if d.name]
        if len(names) != len(set(names)):
            raise ValueError(f"deployments: a name is used twice ({names})")
        return self


class EmbeddingModelConfig(_Strict):
    provider: str
    model: str
    aliases: list[str] = Field(default_factory=list)
    load_on_startup: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    default_input_type: Literal["query", "passage"] = "passage"
    backend: Literal["torch", "onnx"] = Field(
        "torch", description="sentence_transformers models: the library on torch, or an exported graph on onnxruntime"
    )
    quantize: Literal["int8"] | None = Field(None, description="backend onnx: serve the int8-quantized graph")
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _quantize_needs_onnx(self) -> EmbeddingModelConfig:
        if self.quantize and self.backend != "onnx":
            raise ValueError("quantize applies to backend: onnx; set backend: onnx or remove quantize")
        return self


class ServiceConfig(_Strict):
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    embeddings: dict[str, EmbeddingModelConfig]


def _expand_env(text: str, environ: Mapping[str, str], path: Path) -> str:
    """Replace `${VAR}` and `${VAR:-default}` with values from the environment."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: ${{{name}}} is used but the environment variable {name} is not set")

    return _ENV_REF.sub(replace, text)


def _read_yaml(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (set CONFIG_DIR to the folder holding it)")
    try:
        data = yaml.safe_load(_expand_env(path.read_text(encoding="utf-8"), environ, path)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _section(path: Path, key: str, schema: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    data = _read_yaml(path, environ)
    unknown = set(data) - {key}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected only '{key}'")
    entries = data.get(key) or {}
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: {key}: must be a mapping of name -> definition")
    parsed: dict[str, Any] = {}
    for name, body in entries.items():
        try:
            parsed[str(name)] = schema.model_validate(body or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in (key, name, *first["loc"]))
            raise ConfigError(f"{path}: {where}: {first['msg']}") from exc
    return parsed


def load_service_config(
    config_dir: Path, known_provider_types: set[str], environ: Mapping[str, str] | None = None
) -> ServiceConfig:
    environ = environ if environ is not None else {}
    providers_path = config_dir / "providers.yaml"
    models_path = config_dir / "models.yaml"
    embeddings_path = config_dir / "embeddings.yaml"
    providers = _section(providers_path, "providers", ProviderConfig, environ)
    models = _section(models_path, "models", ModelConfig, environ)
    embeddings = _section(embeddings_path, "embeddings", EmbeddingModelConfig, environ)

    for name, provider in providers.items():
        if provider.type not in known_provider_types:
            raise ConfigError(
                f"{providers_path}: providers.{name}.type: unknown provider type '{provider.type}'; "
                f"known: {sorted(known_provider_types)}"
            )
    seen_names: dict[str, str] = {}
    for path, section, entries in (
        (models_path, "models", models),
        (embeddings_path, "embeddings", embeddings),
    ):
        for name, entry in entries.items():
            # A model defined by its deployments takes its provider from them: they are checked one by one below.
            if entry.provider not in providers and not getattr(entry, "deployments", None):
                raise ConfigError(
                    f"{path}: {section}.{name}.provider: '{entry.provider}' is not defined in "
                    f"{providers_path} (defined: {sorted(providers)})"
                )
            for label in (name, *entry.aliases):
                if label in seen_names and section == seen_names[label].split(".")[0]:
                    raise ConfigError(f"{path}: {section}.{name}: name or alias '{label}' is used twice")
                seen_names[label] = f"{section}.{name}"
    for name, entry in models.items():
        for position, deployment in enumerate(entry.deployments):
            if deployment.provider not in providers:
                raise ConfigError(
                    f"{models_path}: models.{name}.deployments.{position}.provider: '{deployment.provider}' is not "
                    f"defined in {providers_path} (defined: {sorted(providers)})"
                )
        for fallback in entry.fallbacks:
            if fallback not in models and fallback not in seen_names:
                raise ConfigError(f"{models_path}: models.{name}.fallbacks: '{fallback}' is not a model in this file")
    return ServiceConfig(providers=providers, models=models, embeddings=embeddings)

"""The deployments the configuration defines: one per model, or one per entry of a model's `deployments:` (each a
remote provider entry with its own URL, key, weight and limits)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sop_llm.infra.model_config import ConfigError, ModelConfig, ServiceConfig
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.registry import generation_provider
from sop_llm.services.routing.node_limits import Limits


@dataclass(frozen=True)
class Planned:
    """A deployment to create: `model` is the configured model it serves."""

    name: str
    model: str
    provider: GenerationProvider
    weight: float = 1.0
    limits: Limits = field(default_factory=Limits)


def plan_deployments(config: ServiceConfig) -> list[Planned]:
    planned: list[Planned] = []
    taken = set(config.models)
    for model_name, model in config.models.items():
        if not model.deployments:
            provider_config = config.providers[model.provider]
            provider = generation_provider(provider_config.type)(model_name, model, provider_config)
            planned.append(Planned(model_name, model_name, provider))
            continue
        for position, deployment in enumerate(model.deployments, start=1):
            where = f"models.yaml: models.{model_name}.deployments.{position - 1}"
            name = deployment.name or f"{model_name}@{position}"
            if name in taken:
                raise ConfigError(f"{where}.name: '{name}' is already the name of a model or deployment")
            taken.add(name)
            base = config.providers[deployment.provider]
            cls = generation_provider(base.type)
            if cls.local:
                raise ConfigError(
                    f"{where}.provider: '{deployment.provider}' runs the model in this process, and a model's "
                    "deployments are nodes elsewhere; run it on another replica of this service and list that "
                    "replica here through an `openai` provider entry with its base_url"
                )
            overrides = {"base_url": deployment.base_url, "api_key": deployment.api_key, "timeout": deployment.timeout}
            provider_config = base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
            model_config = _one_node(model, deployment.provider, deployment.model or model.model)
            planned.append(
                Planned(
                    name,
                    model_name,
                    cls(name, model_config, provider_config),
                    deployment.weight,
                    Limits(deployment.max_parallel, deployment.rpm, deployment.tpm),
                )
            )
    return planned


def _one_node(model: ModelConfig, provider: str, upstream: str) -> ModelConfig:
    return model.model_copy(update={"provider": provider, "model": upstream, "deployments": []})

"""GET /v1/models and GET /v1/models/{id}: every model and alias, generation and embedding."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.openai.answers import ModelList, ModelObject
from sop_llm.api.openai.errors import OPENAI_ERRORS
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import ModelNotFoundError
from sop_llm.infra.lists import openai_list
from sop_llm.services.container import Services

router = APIRouter(tags=["openai"], responses=OPENAI_ERRORS)


def _entries(services: Services) -> dict[str, dict[str, Any]]:
    created = int(services.started_at)
    entries: dict[str, dict[str, Any]] = {}
    for model in services.router.describe() + services.embeddings.describe():
        for model_id in (model["name"], *model["aliases"]):
            entries[model_id] = {"id": model_id, "object": "model", "created": created, "owned_by": "sop-llm"}
    return entries


@router.get("/models", responses=answers(ModelList, "Every model and alias"))
async def list_models(services: ServicesDep) -> Response:
    return json_response(openai_list(list(_entries(services).values())))


@router.get("/models/{model_id:path}", responses=answers(ModelObject, "The model"))
async def get_model(model_id: str, services: ServicesDep) -> Response:
    entry = _entries(services).get(model_id)
    if entry is None:
        raise ModelNotFoundError(f"The model '{model_id}' does not exist", param="model")
    return json_response(entry)

"""GET /api/tags, POST /api/show, GET /api/ps and GET /api/version: the models as Ollama lists them (catalog.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from sop_llm.api.body import documented_body, parse_body
from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep, services_of
from sop_llm.api.ollama import catalog
from sop_llm.api.ollama.answers import RunningModels, Shown, Tags, Version
from sop_llm.api.ollama.errors import OLLAMA_ERRORS
from sop_llm.api.ollama.names import any_model
from sop_llm.api.ollama.protocol import ShowRequest
from sop_llm.api.responses import json_response

router = APIRouter(tags=["ollama"], responses=OLLAMA_ERRORS)
# The version of Ollama whose API this surface follows: clients that check the version for a feature (structured
# output, tools) find it.
OLLAMA_VERSION = "0.33.0"


@router.get("/version", responses=answers(Version, "The Ollama version this API follows"))
async def version() -> Response:
    return json_response({"version": OLLAMA_VERSION})


@router.get("/tags", responses=answers(Tags, "Every model"))
async def tags(services: ServicesDep) -> Response:
    return json_response({"models": [catalog.tag(item, services) for item in await catalog.entries(services)]})


@router.get("/ps", responses=answers(RunningModels, "The loaded local models"))
async def running(services: ServicesDep) -> Response:
    loaded = [item for item in await catalog.entries(services) if item.local and item.loaded]
    return json_response({"models": [catalog.running(item) for item in loaded]})


@router.post("/show", openapi_extra=documented_body(ShowRequest), responses=answers(Shown, "The model"))
async def show(request: Request) -> Response:
    body = await parse_body(request, ShowRequest)
    services = services_of(request)
    await services.catalog.ensure(body.wanted())
    kind, name = any_model(services, body.wanted())
    item = await catalog.entry(services, kind, name)
    return json_response(catalog.show(item, services))

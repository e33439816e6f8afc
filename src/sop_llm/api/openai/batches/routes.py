"""OpenAI's Batch API: POST /v1/batches, GET /v1/batches/{id}, GET /v1/batches, POST /v1/batches/{id}/cancel.
Each caller sees only their own batches."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.openai.answers import BatchList, BatchObject
from sop_llm.api.openai.errors import OPENAI_ERRORS
from sop_llm.api.request_state import principal_of
from sop_llm.api.responses import json_response
from sop_llm.infra.lists import openai_page
from sop_llm.services.batches.views import batch_view

router = APIRouter(tags=["batches"], responses=OPENAI_ERRORS)


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = Field(None, max_length=16)

    @field_validator("metadata")
    @classmethod
    def _sized(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if len(key) > 64 or len(item) > 512:
                raise ValueError("keys are at most 64 characters and values at most 512")
        return value


@router.post("/batches", responses=answers(BatchObject, "The batch, validated and queued"))
async def create_batch(body: BatchBody, request: Request, services: ServicesDep) -> Response:
    row, progress = await services.batches.create(
        body.input_file_id, body.endpoint, body.completion_window, body.metadata, principal_of(request).subject
    )
    return json_response(batch_view(row, progress))


@router.get("/batches/{batch_id}", responses=answers(BatchObject, "The batch"))
async def get_batch(batch_id: str, request: Request, services: ServicesDep) -> Response:
    return json_response(batch_view(*await services.batches.get(batch_id, principal_of(request).subject)))


@router.get("/batches", responses=answers(BatchList, "A page of batches, newest first"))
async def list_batches(
    request: Request,
    services: ServicesDep,
    limit: int = Query(20, ge=1, le=100),
    after: str | None = Query(None, max_length=64),
) -> Response:
    found, more = await services.batches.search(principal_of(request).subject, limit, after)
    return json_response(openai_page([batch_view(row, progress) for row, progress in found], has_more=more))


@router.post("/batches/{batch_id}/cancel", responses=answers(BatchObject, "The batch, cancelling"))
async def cancel_batch(batch_id: str, request: Request, services: ServicesDep) -> Response:
    return json_response(batch_view(*await services.batches.cancel(batch_id, principal_of(request).subject)))

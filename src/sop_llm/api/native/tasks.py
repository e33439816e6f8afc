"""Background tasks: POST → 202 with an id; GET one or a filtered page; DELETE cancels."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import Task, TaskPage
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.request_state import principal_of
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import BadRequestError, RequestValidationFailed
from sop_llm.services.payloads import EmbeddingsBody, FixBody, GenerateBody, SimilarityBody
from sop_llm.services.tasks.views import task_view

router = APIRouter(tags=["tasks"], responses=NATIVE_ERRORS)

# Each kind's payload is the body of the matching synchronous endpoint.
PAYLOADS: dict[str, type[BaseModel]] = {
    "generate": GenerateBody,
    "embeddings": EmbeddingsBody,
    "similarity": SimilarityBody,
    "json_fix": FixBody,
}


class TaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["generate", "embeddings", "similarity", "json_fix"]
    payload: dict[str, Any]
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)
    webhook_url: str | None = Field(None, pattern=r"^https?://", max_length=2048)
    max_attempts: int | None = Field(None, ge=1, le=20)


def _validated_payload(body: TaskBody) -> dict[str, Any]:
    try:
        payload = PAYLOADS[body.kind].model_validate(body.payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("payload", *first["loc"]))
        raise RequestValidationFailed(f"{where}: {first['msg']}", param=where) from None
    if isinstance(payload, GenerateBody) and payload.stream:
        raise BadRequestError("payload.stream: tasks cannot stream; poll GET /api/v1/tasks/{id}", param="stream")
    return payload.model_dump(mode="json", by_alias=True, exclude_none=True)


@router.post(
    "/tasks",
    status_code=202,
    responses={
        **answers(Task, "The task is queued", status=202),
        **answers(Task, "The task of this `idempotency_key`, made before"),
    },
)
async def create_task(body: TaskBody, request: Request, services: ServicesDep) -> Response:
    principal = principal_of(request)
    row, created = await services.tasks.submit(
        body.kind, _validated_payload(body), body.idempotency_key, body.webhook_url, body.max_attempts, principal
    )
    if not created and not principal.admin and row.owner != principal.subject:
        raise BadRequestError(
            "idempotency_key: already used by another caller; choose another", param="idempotency_key"
        )
    return json_response(task_view(row), 202 if created else 200)


@router.get("/tasks/{task_id}", responses=answers(Task, "The task"))
async def get_task(task_id: str, request: Request, services: ServicesDep) -> Response:
    return json_response(task_view(await services.tasks.get(task_id, principal_of(request))))


@router.get("/tasks", responses=answers(TaskPage, "A page of tasks, newest first"))
async def list_tasks(
    request: Request,
    services: ServicesDep,
    status: Literal["pending", "processing", "completed", "failed", "cancelled"] | None = None,
    kind: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000_000),
) -> Response:
    rows, total = await services.tasks.search(status, kind, limit, offset, principal_of(request))
    return json_response({"tasks": [task_view(r) for r in rows], "total": total, "limit": limit, "offset": offset})


@router.delete("/tasks/{task_id}", responses=answers(Task, "The task, cancelled"))
async def cancel_task(task_id: str, request: Request, services: ServicesDep) -> Response:
    return json_response(task_view(await services.tasks.cancel(task_id, principal_of(request))))

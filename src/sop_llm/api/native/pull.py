"""Models pulled from a Hugging Face hub, as an admin manages them: `POST /api/v1/models/pull` (progress as
server-sent events, or one answer with `stream: false`), `GET /api/v1/models/pulled`, `DELETE
/api/v1/models/{name}`. A pulled model is served by name as soon as its pull ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from sop_llm.api.contracts import EVENT_STREAM, answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.internal_error import internal_error
from sop_llm.api.native.answers import PulledModel, PulledModelDeleted, PulledModels
from sop_llm.api.native.errors import NATIVE_ERRORS, native_body
from sop_llm.api.request_state import require_admin
from sop_llm.api.responses import EventStreamResponse, json_response, sse_event
from sop_llm.infra.errors import AppError
from sop_llm.services.container import Services
from sop_llm.services.models.model import PulledModelRow
from sop_llm.services.models.progress import PullDone, PullProgress

router = APIRouter(tags=["models"], dependencies=[Depends(require_admin)], responses=NATIVE_ERRORS)


class PullBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=512,
        description="<owner>/<repo>[:<quantization or file>] (also hf.co/<owner>/<repo>:<quantization>)",
    )
    name: str | None = Field(None, min_length=1, max_length=255, description="serve it as; default: the spec")
    stream: bool = Field(True, description="progress as server-sent events; false: one answer when done")


def described(row: PulledModelRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "spec": row.spec,
        "kind": row.kind,
        "revision": row.revision,
        "size_bytes": row.size_bytes,
        "context_length": row.context_length,
        "dimensions": row.dimensions,
        "pulled_at": row.pulled_at.isoformat(),
        "files": row.files,
    }


def serve(services: Services, row: PulledModelRow) -> None:
    """Serve the model of a finished pull (a pull again of a served model changes nothing)."""
    if row.name not in services.catalog.served:
        services.catalog.register(row)


@router.post(
    "/models/pull",
    responses=answers(
        PulledModel,
        "`stream: false`: the pulled model, served from now on",
        stream=EVENT_STREAM,
        stream_description="`progress` events (`{stage, file, completed, total, pull_completed, pull_total}`), then "
        "`done` (the pulled model) or `error` (the native error body)",
    ),
)
async def pull(body: PullBody, services: ServicesDep) -> Response:
    """Errors found before any byte moves (no such repository 404, no such quantization 400) are plain HTTP errors;
    later ones end the stream with an `error` event. Closing the stream stops the pull; the next one resumes it."""
    if not body.stream:
        row = await services.puller.pull(body.model, name=body.name)
        serve(services, row)
        return json_response(described(row))
    events = services.puller.stream(body.model, name=body.name)
    first = await until_resolved(events)
    return EventStreamResponse(_sse(services, first, events))


async def until_resolved(events: AsyncIterator[PullProgress | PullDone]) -> list[PullProgress | PullDone]:
    """The events up to the first that comes after the repository was resolved (where a 404 or 400 shows)."""
    taken: list[PullProgress | PullDone] = []
    try:
        async for event in events:
            taken.append(event)
            if not isinstance(event, PullProgress) or event.stage != "resolving":
                break
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    return taken


async def _sse(
    services: Services, first: list[PullProgress | PullDone], events: AsyncIterator[PullProgress | PullDone]
) -> AsyncIterator[bytes]:
    async with aclosing(events):  # type: ignore[type-var]
        try:
            for event in [*first]:
                yield _event(services, event)
            async for event in events:
                yield _event(services, event)
        except AppError as exc:
            yield sse_event(native_body(exc), "error")
        except Exception as exc:  # a bug must still end the stream with an error event
            yield sse_event(native_body(internal_error(exc, "a pull")), "error")


def _event(services: Services, event: PullProgress | PullDone) -> bytes:
    if isinstance(event, PullDone):
        serve(services, event.model)
        return sse_event(described(event.model), "done")
    return sse_event(
        {
            "stage": event.stage,
            "file": event.file,
            "completed": event.completed,
            "total": event.total,
            "pull_completed": event.pull_completed,
            "pull_total": event.pull_total,
        },
        "progress",
    )


@router.get("/models/pulled", responses=answers(PulledModels, "Every pulled model"))
async def pulled(services: ServicesDep) -> Response:
    rows = await services.catalog.registry.list()
    return json_response({"models": [described(row) for row in rows]})


@router.delete("/models/{name:path}", responses=answers(PulledModelDeleted, "The model is gone"))
async def delete(name: str, services: ServicesDep) -> Response:
    """Stop serving a pulled model and delete its files (those another pulled model uses stay)."""
    removal = await services.catalog.remove(name)
    return json_response({"name": removal.model.name, "deleted": True, "freed_bytes": removal.freed_bytes})

"""POST /api/pull and DELETE /api/delete (admin): models from a Hugging Face hub, named as Ollama names them
(`hf.co/<owner>/<repo>:<quantization>`), pulled through the service's model store and served by name at once.

Progress is Ollama's: `pulling manifest`, then per file `pulling <digest>` with `digest`, `total` and `completed`,
then `verifying sha256 digest`, `writing manifest` and `success`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from starlette.responses import Response

from sop_llm.api.body import documented_body, parse_body
from sop_llm.api.contracts import NDJSON, answers
from sop_llm.api.deps import services_of
from sop_llm.api.native.pull import serve, until_resolved
from sop_llm.api.ollama.answers import PullStatus
from sop_llm.api.ollama.errors import OLLAMA_ERRORS
from sop_llm.api.ollama.names import not_found
from sop_llm.api.ollama.protocol import _Tolerant
from sop_llm.api.ollama.streaming import NDJSONResponse, ndjson_lines
from sop_llm.api.request_state import require_admin
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import BadRequestError, NotFoundError
from sop_llm.services.container import Services
from sop_llm.services.models.progress import PullDone, PullProgress

router = APIRouter(tags=["ollama"], dependencies=[Depends(require_admin)], responses=OLLAMA_ERRORS)


class PullRequest(_Tolerant):
    model: str = ""
    name: str = Field("", description="deprecated: the model, as older clients send it")
    stream: bool = True

    def wanted(self) -> str:
        wanted = self.model or self.name
        if not wanted:
            raise BadRequestError("model is required", param="model")
        return wanted


class DeleteRequest(PullRequest):
    pass


@router.post(
    "/pull",
    openapi_extra=documented_body(PullRequest),
    responses=answers(
        PullStatus,
        '`stream: false`: `{"status": "success"}` once the model is pulled',
        stream=NDJSON,
        stream_description="`stream` (the default): one status object a line (`pulling manifest`, `pulling <digest>` "
        'with `digest`, `total`, `completed`, …, `success`); an error is a last line `{"error": …}`',
    ),
)
async def pull(request: Request) -> Response:
    body = await parse_body(request, PullRequest)
    services = services_of(request)
    if not body.stream:
        row = await services.puller.pull(body.wanted())
        serve(services, row)
        return json_response({"status": "success"})
    events = services.puller.stream(body.wanted())
    first = await until_resolved(events)  # before the answer starts: a missing repository is a plain 404
    return NDJSONResponse(ndjson_lines(_frames(services, first, events)))


async def _frames(
    services: Services, first: list[PullProgress | PullDone], events: AsyncIterator[PullProgress | PullDone]
) -> AsyncIterator[dict[str, Any]]:
    yield {"status": "pulling manifest"}
    async with aclosing(events):  # type: ignore[type-var]
        for event in first:
            if (frame := _frame(services, event)) is not None:
                yield frame
        async for event in events:
            if isinstance(event, PullDone):
                yield {"status": "verifying sha256 digest"}
                yield {"status": "writing manifest"}
            if (frame := _frame(services, event)) is not None:
                yield frame


def _frame(services: Services, event: PullProgress | PullDone) -> dict[str, Any] | None:
    if isinstance(event, PullDone):
        serve(services, event.model)
        return {"status": "success"}
    if event.stage != "downloading":
        return None
    digest = f"sha256:{event.sha256}" if event.sha256 else event.file
    return {
        "status": f"pulling {digest.removeprefix('sha256:')[:12]}",
        "digest": digest,
        "total": event.total,
        "completed": event.completed,
    }


@router.delete(
    "/delete",
    openapi_extra=documented_body(DeleteRequest),
    response_class=Response,
    response_description="The model is deleted (an empty body)",
)
async def delete(request: Request) -> Response:
    body = await parse_body(request, DeleteRequest)
    services = services_of(request)
    try:
        await services.catalog.remove(body.wanted())
    except NotFoundError:
        raise not_found(body.wanted()) from None
    return Response(status_code=200)

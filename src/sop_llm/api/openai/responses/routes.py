"""OpenAI's Responses API on every model: POST /v1/responses (whole or streamed), GET and DELETE
/v1/responses/{id}, GET /v1/responses/{id}/input_items. A request is translated onto the chat generation
(conversation.py) and answered as a response object (output.py) or typed events (streaming.py); with `store` (the
default) it is kept in the database, visible to its creator only, and can be continued with `previous_response_id`."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from sop_llm.api.body import documented_body, parse_body
from sop_llm.api.contracts import EVENT_STREAM, answers
from sop_llm.api.deps import ServicesDep, services_of
from sop_llm.api.generation import open_generation_stream, run_generation
from sop_llm.api.openai.answers import Deleted, InputItemList, ResponseObject
from sop_llm.api.openai.errors import OPENAI_ERRORS
from sop_llm.api.openai.responses.conversation import generation_request
from sop_llm.api.openai.responses.items import input_items
from sop_llm.api.openai.responses.output import ResponseDraft, completion_output
from sop_llm.api.openai.responses.protocol import ResponseCreateRequest
from sop_llm.api.openai.responses.streaming import response_events
from sop_llm.api.request_state import principal_of
from sop_llm.api.responses import EventStreamResponse, json_response
from sop_llm.infra.errors import BadRequestError, UnsupportedFeatureError
from sop_llm.infra.lists import openai_page

router = APIRouter(tags=["openai"], responses=OPENAI_ERRORS)


@router.post(
    "/responses",
    openapi_extra=documented_body(ResponseCreateRequest),
    responses=answers(
        ResponseObject,
        "The response",
        stream=EVENT_STREAM,
        stream_description="`stream: true`: typed events (`event: response.created` … `response.completed`, or "
        "`response.failed`), each `data` a JSON object with its `type` and `sequence_number`",
    ),
)
async def create_response(request: Request) -> Response:
    body = await parse_body(request, ResponseCreateRequest)
    body.check_supported()
    new_items = input_items(body.input)
    services = services_of(request)
    owner = principal_of(request).subject
    model, history = body.model, list[dict[str, Any]]()
    if body.previous_response_id is not None:
        previous, history = await services.responses.conversation(body.previous_response_id, owner)
        model = model or previous.model
    items = [*history, *new_items]
    gen = generation_request(body, items, len(history), services.router.default_max_tokens)
    store = partial(services.responses.save, input_items=items, owner=owner) if body.store else None
    draft = ResponseDraft(body)
    if body.stream:
        draft.model, chunks = await open_generation_stream(request, services, model, gen, body.fallbacks)
        return EventStreamResponse(response_events(chunks, draft, store))
    draft.model, completion, verdict = await run_generation(request, services, model, gen, body.fallbacks)
    output = completion_output(completion)
    reply = draft.body("completed", output, completion.usage, completion.finish_reason, verdict=verdict)
    if store is not None:
        await store(reply)
    return json_response(reply)


@router.get("/responses/{response_id}", responses=answers(ResponseObject, "The stored response"))
async def get_response(response_id: str, request: Request, services: ServicesDep, stream: bool = False) -> Response:
    if stream:
        raise UnsupportedFeatureError(
            "stream: a stored response cannot be replayed as events; leave stream out to get it whole", param="stream"
        )
    row = await services.responses.get(response_id, principal_of(request).subject)
    return json_response(row.body)


@router.delete("/responses/{response_id}", responses=answers(Deleted, "The response is gone"))
async def delete_response(response_id: str, request: Request, services: ServicesDep) -> Response:
    await services.responses.delete(response_id, principal_of(request).subject)
    return json_response({"id": response_id, "object": "response", "deleted": True})


@router.get("/responses/{response_id}/input_items", responses=answers(InputItemList, "A page of the input items"))
async def list_input_items(
    response_id: str,
    request: Request,
    services: ServicesDep,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = Query(None, description="an item id: the page starts after it"),
) -> Response:
    """Every item the response's model was given, the continued responses' items included; newest first unless
    `order=asc`."""
    row = await services.responses.get(response_id, principal_of(request).subject)
    return json_response(_page(row.input_items, limit, order, after))


def _page(items: list[dict[str, Any]], limit: int, order: str, after: str | None) -> dict[str, Any]:
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise BadRequestError(f"after: no item '{after[:80]}' in this response's input items", param="after")
        start = ids.index(after) + 1
    return openai_page(ordered[start : start + limit], has_more=start + limit < len(ordered))

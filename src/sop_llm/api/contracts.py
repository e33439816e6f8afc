"""What the OpenAPI schema (`/openapi.json`, `/docs`, docs/api.md) says each route answers: its body on success
(`answers`) and the error body of the surface it belongs to (`error_responses`, given to the surface's routers).

These are declarations only. The routes build and return their own responses, which FastAPI sends as they are, so
the models here never validate or serialize an answer and cost a request nothing. They take the place of FastAPI's
defaults, which were wrong for this service: an empty schema for every answer, and `{"detail": […]}` for a body
that does not validate, which the service answers in its surface's own error shape instead.
"""

from __future__ import annotations

from typing import Any

Responses = dict[int | str, dict[str, Any]]

EVENT_STREAM = "text/event-stream"
NDJSON = "application/x-ndjson"


def answers(
    model: Any,
    description: str,
    *,
    status: int = 200,
    stream: str | None = None,
    stream_description: str = "",
) -> Responses:
    """The success answer: `model` as JSON and, for a route that can stream, the stream's media type (`stream`)
    with what its events or lines hold (`stream_description`)."""
    content: dict[str, Any] = {"application/json": {}}  # the model's schema goes here, listed first
    if stream == EVENT_STREAM:
        content[stream] = {"schema": _event(stream_description)}
    elif stream is not None:
        content[stream] = {"schema": {"type": "string", "description": stream_description}}
    return {status: {"model": model, "description": description, "content": content}}


def _event(description: str) -> dict[str, Any]:
    """One server-sent event (the schema of a `text/event-stream` body describes each event): its `data`, and
    the `event` name where the stream names its events."""
    return {
        "type": "object",
        "description": description,
        "required": ["data"],
        "properties": {"event": {"type": "string"}, "data": {"type": "string", "description": "JSON, or `[DONE]`"}},
    }


def raw_answer(media_type: str, description: str, schema: dict[str, Any] | None = None) -> Responses:
    """A success answer that is not JSON (a page, a metrics text, a file's bytes); the route's errors stay JSON
    as long as the route's `response_class` has no media type of its own (starlette's `Response`)."""
    return {200: {"description": description, "content": {media_type: {"schema": schema or {"type": "string"}}}}}


def error_responses(model: Any, description: str) -> Responses:
    """Every 4xx and 5xx answer of a surface, in its error shape `model` (FastAPI's own 422 then goes away)."""
    return {
        "4XX": {"model": model, "description": f"The request was refused: {description}"},
        "5XX": {"model": model, "description": f"The service could not answer: {description}"},
    }

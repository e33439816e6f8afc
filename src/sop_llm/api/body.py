"""Parse a JSON body straight from bytes with pydantic (one pass in Rust), for the routes on the hot path.

FastAPI's own body handling decodes the JSON, then validates the Python objects, then solves dependencies; on a
gateway route that was a measurable share of each request. Errors are raised as FastAPI's RequestValidationError,
so they leave through the same handler and in the same shape as everywhere else.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from sop_llm.api.disconnect import ClientDisconnected

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    try:
        body = await request.body()
    except ClientDisconnect:
        raise ClientDisconnected from None  # gone while sending its body: nobody to answer, not a server error
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` that shows `model` as the request body in /docs. The nested models are written inline: an
    operation's extra cannot add to the document's `components`, and names there (`Message`) are taken."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _inline(schema, definitions)}}},
    }


def _inline(value: Any, definitions: dict[str, Any]) -> Any:
    """Replace each `{"$ref": "#/$defs/Name"}` with the definition itself (the wire models are not recursive)."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline(item, definitions) for key, item in value.items()}
    if isinstance(value, list):
        return [_inline(item, definitions) for item in value]
    return value

"""Parse a JSON body straight from bytes with pydantic (one pass in Rust), for the routes on the hot path.

FastAPI's own body handling decodes the JSON, then validates the Python objects, then solves dependencies; on a
gateway route that was a measurable share of each request. Errors are raised as FastAPI's RequestValidationError,
so they leave through the same handler and in the same shape as everywhere else.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` that shows `model` as the request body in /docs."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
    }

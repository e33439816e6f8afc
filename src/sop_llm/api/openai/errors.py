"""The error tree in OpenAI's shape, under /v1: `{"error": {"message", "type", "param", "code"}}`, with
`x-should-retry: false` on answers a retry cannot change (the SDKs read it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import Response

from sop_llm.api.contracts import error_responses
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import AppError

_FINAL = (400, 404, 413, 422)


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error`, `authentication_error`, `server_error`, …")
    param: str | None = Field(description="the request field at fault, when one is")
    code: str | None = Field(description="the service's error code, e.g. `model_not_found`")
    choices: list[str] | None = Field(None, description="a pull that names no single model: what the repository holds")
    attempts: list[dict[str, Any]] | None = Field(None, description="a JSON answer that failed: every attempt")


class OpenAIError(BaseModel):
    """An error, as OpenAI's API and SDKs know it."""

    error: OpenAIErrorDetail


OPENAI_ERRORS = error_responses(OpenAIError, "OpenAI's error body (`x-should-retry: false` when a retry cannot help)")


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def openai_body(exc: AppError) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": exc.message,
        "type": exc.openai_type,
        "param": exc.param,
        "code": exc.error_code,
    }
    for key in exc.openai_details:  # extra keys, e.g. a JSON failure's attempts: SDKs keep them in the body
        if key in exc.details:
            error[key] = exc.details[key]
    return {"error": error}


def openai_error_response(exc: AppError, headers: Mapping[str, str]) -> Response:
    extra = {"x-should-retry": "false"} if exc.status_code in _FINAL else {}
    return json_response(openai_body(exc), exc.status_code, {**headers, **extra})

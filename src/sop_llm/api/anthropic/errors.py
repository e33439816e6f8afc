"""The error tree in Anthropic's shape: `{"type": "error", "error": {"type", "message"}, "request_id"}` with the
status codes Anthropic's clients know (the SDK picks its exception class by status; Claude Code retries 429, 529
and 5xx).

Our statuses map onto Anthropic's: a rejected body (400 or 422) is 400 `invalid_request_error`; a busy local model
(our 429 `overloaded`) and anything temporarily unavailable (503: model loading, circuit open, upstream down) is
529 `overloaded_error`; a timeout is 504 `timeout_error`; other server-side failures are 500 `api_error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.responses import Response

from sop_llm.api.contracts import error_responses
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import AppError, OverloadedError
from sop_llm.infra.trace import current_trace_id

MESSAGES_PATH = "/v1/messages"
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicErrorDetail(BaseModel):
    type: str = Field(description="`invalid_request_error`, `not_found_error`, `overloaded_error`, …")
    message: str


class AnthropicError(BaseModel):
    """An error, as Anthropic's API and SDKs know it."""

    type: Literal["error"]
    error: AnthropicErrorDetail
    request_id: str


ANTHROPIC_ERRORS = error_responses(AnthropicError, "Anthropic's error body (529 when the model is overloaded)")


def is_anthropic_path(path: str) -> bool:
    return path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/")


def anthropic_status(exc: AppError) -> int:
    status = exc.status_code
    if status == 422:
        return 400
    if isinstance(exc, OverloadedError) or status == 503:
        return 529
    if status in _TYPES or status < 500:
        return status
    return 500  # 502 (an upstream failed) and anything else on the server side


def anthropic_body(exc: AppError) -> dict[str, Any]:
    status = anthropic_status(exc)
    kind = _TYPES.get(status, "invalid_request_error")  # e.g. 405 method not allowed
    return {"type": "error", "error": {"type": kind, "message": exc.message}, "request_id": current_trace_id()}


def anthropic_error_response(exc: AppError, headers: Mapping[str, str]) -> Response:
    status = anthropic_status(exc)
    extra = {"request-id": current_trace_id()}
    if status in (400, 404, 413):
        extra["x-should-retry"] = "false"
    return json_response(anthropic_body(exc), status, {**headers, **extra})

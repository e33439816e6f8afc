"""The error tree in the native shape, on every path no other surface claims: `{"error": {"code", "message",
"trace_id", "details"}}` with the service's own status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import Response

from sop_llm.api.contracts import error_responses
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import AppError
from sop_llm.infra.trace import current_trace_id


class NativeErrorDetail(BaseModel):
    code: str = Field(description="what went wrong, e.g. `model_not_found`, `validation_error`, `overloaded`")
    message: str
    trace_id: str = Field(description="the request's id, also in its X-Request-ID header")
    details: dict[str, Any] = Field(description="more about the error, e.g. every validation problem in `errors`")


class NativeError(BaseModel):
    """An error of the native API."""

    error: NativeErrorDetail


NATIVE_ERRORS = error_responses(NativeError, "the native error body")


def native_body(exc: AppError) -> dict[str, Any]:
    return {
        "error": {
            "code": exc.error_code,
            "message": exc.message,
            "trace_id": current_trace_id(),
            "details": exc.details,
        }
    }


def native_error_response(exc: AppError, headers: Mapping[str, str]) -> Response:
    return json_response(native_body(exc), exc.status_code, headers)

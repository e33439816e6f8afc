"""The error tree in the native shape, on every path no other surface claims: `{"error": {"code", "message",
"trace_id", "details"}}` with the service's own status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from sop_llm.api.responses import json_response
from sop_llm.infra.errors import AppError
from sop_llm.infra.trace import current_trace_id


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

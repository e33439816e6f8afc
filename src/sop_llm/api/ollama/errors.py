"""The error tree in Ollama's shape: `{"error": "<message>"}` with the HTTP status, which Ollama's clients raise as
their own error (the Python client's `ResponseError` carries the message and the status). A body that does not
validate is a 400, as Ollama answers it; every other status is the service's own. Inside an NDJSON stream an error
is a last line of the same shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from sop_llm.api.contracts import error_responses
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import AppError, RequestValidationFailed

_NATIVE_PREFIX = "/api/v1"


class OllamaError(BaseModel):
    """An error, as Ollama's clients read it."""

    error: str


OLLAMA_ERRORS = error_responses(OllamaError, "Ollama's error body")


def is_ollama_path(path: str) -> bool:
    """Ollama's routes live under /api; the native API under /api/v1 keeps its own shape."""
    if not path.startswith("/api/"):
        return False
    return not (path == _NATIVE_PREFIX or path.startswith(_NATIVE_PREFIX + "/"))


def ollama_status(exc: AppError) -> int:
    return 400 if isinstance(exc, RequestValidationFailed) else exc.status_code


def ollama_body(exc: AppError) -> dict[str, Any]:
    return {"error": exc.message}


def ollama_error_response(exc: AppError, headers: Mapping[str, str]) -> Response:
    return json_response(ollama_body(exc), ollama_status(exc), headers)

"""Turn the error tree into HTTP bodies, in the shape of the surface a request was made on: Anthropic's under
/v1/messages, OpenAI's elsewhere under /v1, Ollama's under /api (outside /api/v1), the native shape everywhere else.
Each surface's shape lives with it (`<surface>/errors.py`); this module only picks one, and no surface imports it.
Unexpected exceptions become errors through api/internal_error.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from loguru import logger
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sop_llm.api.anthropic.errors import anthropic_error_response, is_anthropic_path
from sop_llm.api.disconnect import ClientDisconnected
from sop_llm.api.native.errors import native_error_response
from sop_llm.api.ollama.errors import is_ollama_path, ollama_error_response
from sop_llm.api.openai.errors import is_openai_path, openai_error_response
from sop_llm.infra.errors import AppError, BadRequestError, RequestValidationFailed
from sop_llm.services.usage.record import note_error

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error"}

ErrorShape = Callable[[AppError, Mapping[str, str]], Response]
# The first surface that claims the path answers (Anthropic's /v1/messages before OpenAI's /v1); the native shape
# answers the rest.
_SURFACES: tuple[tuple[Callable[[str], bool], ErrorShape], ...] = (
    (is_anthropic_path, anthropic_error_response),
    (is_openai_path, openai_error_response),
    (is_ollama_path, ollama_error_response),
)
_SURFACE_NAMES = (("anthropic", is_anthropic_path), ("openai", is_openai_path), ("ollama", is_ollama_path))


def surface_of(path: str) -> str:
    """Which API a path belongs to: anthropic, openai, ollama, console or native."""
    for name, claims in _SURFACE_NAMES:
        if claims(path):
            return name
    return "console" if path == "/console" or path.startswith("/console/") else "native"


def error_response(request: Request, exc: AppError) -> Response:
    note_error(exc.error_code)
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    path = request.url.path
    for claims, respond in _SURFACES:
        if claims(path):
            return respond(exc, headers)
    return native_error_response(exc, headers)


def _validation_error(exc: RequestValidationError) -> AppError:
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            return BadRequestError(
                f"the request body is not valid JSON: {ctx.get('error', 'parse error')}", param="body"
            )
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    message = f"{where}: {first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    details = {
        "errors": [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")} for e in errors
        ]
    }
    return RequestValidationFailed(message, param=where, details=details)


def install_error_handlers(app: FastAPI) -> None:
    """Expected errors. Unexpected ones are answered by TraceMiddleware (through `internal_error`), which sits inside
    Starlette's last-resort handler and so can still add the trace id header."""

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        if exc.status_code >= 500:
            logger.warning("{} {} -> {} {}", request.method, request.url.path, exc.status_code, exc.message)
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        error = _validation_error(exc)
        if is_openai_path(request.url.path) and isinstance(error, RequestValidationFailed):
            # OpenAI answers invalid parameters with 400 invalid_request_error.
            error = BadRequestError(error.message, param=error.param, details=error.details)
        return error_response(request, error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        error = AppError(str(exc.detail))
        error.status_code = exc.status_code  # type: ignore[misc]
        error.error_code = _HTTP_CODES.get(exc.status_code, "http_error")  # type: ignore[misc]
        error.openai_type = _OPENAI_TYPES.get(exc.status_code, "invalid_request_error")  # type: ignore[misc]
        return error_response(request, error)

    @app.exception_handler(ClientDisconnected)
    async def client_gone(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)

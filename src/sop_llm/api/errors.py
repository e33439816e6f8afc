"""Turn the error tree into HTTP bodies: Anthropic's shape under /v1/messages, OpenAI's elsewhere under /v1,
Ollama's under /api (outside /api/v1), the native shape everywhere else."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from loguru import logger
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sop_llm.api.anthropic.errors import anthropic_error_response, is_anthropic_path
from sop_llm.api.disconnect import ClientDisconnected
from sop_llm.api.ollama.errors import is_ollama_path, ollama_error_response
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import AppError, BadRequestError, RequestValidationFailed
from sop_llm.infra.trace import current_trace_id

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error"}


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def native_body(exc: AppError) -> dict[str, Any]:
    return {
        "error": {
            "code": exc.error_code,
            "message": exc.message,
            "trace_id": current_trace_id(),
            "details": exc.details,
        }
    }


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


def internal_error(exc: BaseException, where: str) -> AppError:
    """The one way an unexpected exception leaves the service: logged with its traceback (under the request's trace
    id), answered as a 500 — or, inside a stream, its last error event — that says no more than that."""
    logger.opt(exception=exc).error("unhandled error on {}", where)
    return AppError("internal error; the trace id identifies it in the logs")


def error_response(request: Request, exc: AppError) -> Response:
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if is_anthropic_path(request.url.path):
        return anthropic_error_response(exc, headers)
    if is_openai_path(request.url.path):
        if exc.status_code in (400, 404, 413, 422):
            headers["x-should-retry"] = "false"
        return json_response(openai_body(exc), exc.status_code, headers)
    if is_ollama_path(request.url.path):
        return ollama_error_response(exc, headers)
    return json_response(native_body(exc), exc.status_code, headers)


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

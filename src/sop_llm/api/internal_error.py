"""The one way an unexpected exception leaves the service, on every surface and inside streams alike."""

from __future__ import annotations

from loguru import logger

from sop_llm.infra.errors import AppError


def internal_error(exc: BaseException, where: str) -> AppError:
    """Logged with its traceback (under the request's trace id), answered as a 500 — or, inside a stream, its last
    error event — that says no more than that."""
    logger.opt(exception=exc).error("unhandled error on {}", where)
    return AppError("internal error; the trace id identifies it in the logs")

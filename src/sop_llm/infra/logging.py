"""Loguru setup: standard logging routed in, every line stamped with the request's trace id."""

from __future__ import annotations

import inspect
import logging
import sys
from types import FrameType
from typing import TYPE_CHECKING

from loguru import logger

from sop_llm.infra.trace import current_trace_id

if TYPE_CHECKING:
    from loguru import Record

    from sop_llm.infra.settings import Settings

HUMAN_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{extra[trace_id]}</cyan> | {name}:{function}:{line} - <level>{message}</level>"
)


class InterceptHandler(logging.Handler):
    """Send records of the standard `logging` module (uvicorn, libraries) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame: FrameType | None = inspect.currentframe()
        depth = 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def _add_trace_id(record: Record) -> None:
    record["extra"].setdefault("trace_id", current_trace_id())


def setup_logging(settings: Settings) -> None:
    logger.remove()
    logger.configure(patcher=_add_trace_id)
    level = "DEBUG" if settings.debug else settings.log_level.upper()
    if settings.json_logs:
        logger.add(sys.stderr, level=level, serialize=True)
    else:
        logger.add(sys.stderr, level=level, format=HUMAN_FORMAT, colorize=None)
    if settings.log_file is not None:
        logger.add(
            settings.log_file,
            level=level,
            rotation="50 MB",
            retention="7 days",
            serialize=settings.json_logs,
            enqueue=True,
        )
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.getLevelName(level), force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi"):
        std = logging.getLogger(name)
        std.handlers = [InterceptHandler()]
        std.propagate = False
    logging.getLogger("uvicorn.access").disabled = not settings.log_access

"""NDJSON framing of an Ollama answer: one JSON object a line, as `application/x-ndjson`. An error after the
response started is a last line `{"error": "<message>"}` (the Python client raises it as `ResponseError`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from sop_llm.api.internal_error import internal_error
from sop_llm.api.ollama.errors import ollama_body
from sop_llm.api.responses import EventStreamResponse
from sop_llm.infra.errors import AppError
from sop_llm.services.usage.record import note_error


class NDJSONResponse(EventStreamResponse):
    """Streams lines and, like the SSE response, cancels the stream the moment the client disconnects."""

    media_type = "application/x-ndjson"


def _line(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


async def ndjson_lines(frames: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for frame in frames:
            yield _line(frame)
    except AppError as exc:
        note_error(exc.error_code)
        yield _line(ollama_body(exc))
    except Exception as exc:  # a bug must still end the stream the way clients understand
        yield _line(ollama_body(internal_error(exc, "a stream")))

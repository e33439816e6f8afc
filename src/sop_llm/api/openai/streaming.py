"""SSE framing for the OpenAI surface: `data: <json>` per chunk, errors as `data: {"error":…}`, then `[DONE]`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from sop_llm.api.internal_error import internal_error
from sop_llm.api.openai.errors import openai_body
from sop_llm.api.responses import sse_event
from sop_llm.infra.errors import AppError
from sop_llm.providers.types import Chunk, Usage
from sop_llm.services.usage.record import note_error

DONE = b"data: [DONE]\n\n"
# Non-standard field with the JSON pipeline's verdict (provenance, attempts, constraint); clients ignore it.
JSON_VERDICT_FIELD = "sop_json"


async def openai_events(
    chunks: AsyncIterator[Chunk],
    base: dict[str, Any],
    make_choice: Callable[[Chunk | None], dict[str, Any]],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Frame provider chunks as OpenAI chunk objects.

    `make_choice(None)` gives the opening choice (the chat role delta); `make_choice(chunk)` one per chunk.
    With `include_usage`, every chunk has `usage: null` and one extra chunk with empty `choices` carries it.
    """
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    usage: Usage | None = None
    try:
        opening = make_choice(None)
        if opening:
            yield sse_event({**base, "choices": [opening], **extra})
        async for chunk in chunks:
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.text or chunk.tool_calls or chunk.finish_reason is not None:
                payload = {**base, "choices": [make_choice(chunk)], **extra}
                if chunk.json is not None:
                    payload[JSON_VERDICT_FIELD] = chunk.json
                yield sse_event(payload)
        if include_usage:
            yield sse_event({**base, "choices": [], "usage": usage.as_openai_dict() if usage else None})
    except AppError as exc:
        note_error(exc.error_code)
        yield sse_event(openai_body(exc))
    except Exception as exc:  # a bug must still end the stream the way clients understand
        yield sse_event(openai_body(internal_error(exc, "a stream")))
    yield DONE

"""Start a generation stream for either API surface: resolve, admit, and wait for the first chunk while
watching for a disconnect, so errors that happen before any output are still plain HTTP errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from sop_llm.api.disconnect import cancel_on_disconnect
from sop_llm.providers.types import Chunk, GenerationRequest
from sop_llm.services.unified_llm import UnifiedLLM


async def _prepend(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def open_stream(
    request: Request, unified: UnifiedLLM, model: str | None, gen: GenerationRequest
) -> tuple[str, AsyncIterator[Chunk]]:
    resolved = unified.prepare(model, gen)
    chunks = unified.stream(resolved, gen)
    first = await cancel_on_disconnect(request, anext(chunks))
    return resolved.name, _prepend(first, chunks)

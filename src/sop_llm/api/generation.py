"""Start a generation stream for either API surface: route, fall back until a first chunk arrives, and watch for
a disconnect meanwhile, so errors that happen before any output are still plain HTTP errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from sop_llm.api.disconnect import cancel_on_disconnect
from sop_llm.providers.types import Chunk, GenerationRequest
from sop_llm.services.unified_llm import UnifiedLLM


async def open_stream(
    request: Request,
    unified: UnifiedLLM,
    model: str | None,
    gen: GenerationRequest,
    fallbacks: list[str] | None = None,
) -> tuple[str, AsyncIterator[Chunk]]:
    return await cancel_on_disconnect(request, unified.open_stream(model, gen, fallbacks))

"""Run a generation for either API surface: through the JSON pipeline when JSON was asked for, otherwise straight
through ModelRouter; a disconnect cancels the work. Streams are opened (routed, fallen back, first chunk received)
before the response starts, so errors that happen before any output are still plain HTTP errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from sop_llm.api.disconnect import cancel_on_disconnect
from sop_llm.api.middleware.rate_limit import record_tokens
from sop_llm.providers.types import Chunk, Completion, GenerationRequest, Usage
from sop_llm.services.container import Services


async def run_generation(
    request: Request, services: Services, model: str | None, gen: GenerationRequest, fallbacks: list[str] | None
) -> tuple[str, Completion, dict[str, Any] | None]:
    """(model that answered, completion, JSON verdict or None)."""
    if gen.json_mode is None:
        name, completion = await cancel_on_disconnect(
            request, services.router.generate_with_fallback(model, gen, fallbacks)
        )
        _account(services, name, completion.usage)
        return name, completion, None
    name, completion, outcome = await cancel_on_disconnect(
        request, services.structured.generate_json(model, gen, fallbacks)
    )
    _account(services, name, completion.usage)
    return name, completion, outcome.describe()


def _account(services: Services, model: str, usage: Usage) -> None:
    """Tokens to the caller's rate limit and to the per-model token counters."""
    record_tokens(usage.total_tokens)
    services.metrics.observe_tokens(model, usage.prompt_tokens, usage.completion_tokens)


async def open_generation_stream(
    request: Request, services: Services, model: str | None, gen: GenerationRequest, fallbacks: list[str] | None
) -> tuple[str, AsyncIterator[Chunk]]:
    source = services.router.stream_with_fallback if gen.json_mode is None else services.structured.stream_json
    name, chunks = await cancel_on_disconnect(request, source(model, gen, fallbacks))
    return name, _counted(services, name, chunks)


async def _counted(services: Services, model: str, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """Pass the chunks on; the last one's usage is charged to the caller's token limit. Closing this closes the
    source at once (a client that went away stops the generation)."""
    try:
        async for chunk in chunks:
            if chunk.usage is not None:
                _account(services, model, chunk.usage)
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()

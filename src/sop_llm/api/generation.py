"""Run a generation for any API surface: through the JSON pipeline when JSON was asked for, otherwise straight
through ModelRouter; a disconnect cancels the work. Streams are opened (routed, fallen back, first chunk received)
before the response starts, so errors that happen before any output are still plain HTTP errors.

Every generation is charged to its caller: its tokens to the rate limit, the per-model token counters, the usage
tally and — reserved before it runs, settled after — the caller's token budgets (services/usage/budgets.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from sop_llm.api.disconnect import cancel_on_disconnect
from sop_llm.api.metering import reserve_tokens
from sop_llm.api.request_state import caller_key, record_tokens
from sop_llm.providers.types import Chunk, Completion, GenerationRequest, Usage
from sop_llm.services import priority
from sop_llm.services.container import Services
from sop_llm.services.usage.budgets import Reservation, estimate_tokens
from sop_llm.services.usage.meter import note_failure, note_usage


async def _reserve_for(
    request: Request, services: Services, model: str | None, gen: GenerationRequest
) -> Reservation | None:
    priority.caller.set(caller_key(request.scope))  # the local engine shares its slots fairly between callers
    await services.catalog.ensure(model)  # a model pulled by another process is served from its first request
    prompt = estimate_tokens(gen.prompt_chars())
    want = prompt + gen.max_tokens
    reservation = await reserve_tokens(request, services, services.router.resolve(model), want, least=prompt + 1)
    if reservation is not None:
        reservation.prompt = prompt
        if reservation.granted < prompt + gen.max_tokens:
            gen.max_tokens = max(1, reservation.granted - prompt)  # what is left of the budget
    return reservation


async def run_generation(
    request: Request, services: Services, model: str | None, gen: GenerationRequest, fallbacks: list[str] | None
) -> tuple[str, Completion, dict[str, Any] | None]:
    """(model that answered, completion, JSON verdict or None)."""
    reservation = await _reserve_for(request, services, model, gen)
    used = 0
    try:
        if gen.json_mode is None:
            name, completion = await cancel_on_disconnect(
                request, services.router.generate_with_fallback(model, gen, fallbacks)
            )
            verdict = None
        else:
            name, completion, outcome = await cancel_on_disconnect(
                request, services.structured.generate_json(model, gen, fallbacks)
            )
            verdict = outcome.describe()
        used = completion.usage.total_tokens
    finally:
        if reservation is not None:
            await reservation.settle(used)
    _account(services, name, completion.usage)
    return name, completion, verdict


def _account(services: Services, model: str, usage: Usage) -> None:
    """Tokens to the caller's rate limit, the per-model token counters and the caller's usage."""
    record_tokens(usage.total_tokens)
    services.metrics.observe_tokens(model, usage.prompt_tokens, usage.completion_tokens)
    note_usage(model, usage.prompt_tokens, usage.completion_tokens)


async def open_generation_stream(
    request: Request, services: Services, model: str | None, gen: GenerationRequest, fallbacks: list[str] | None
) -> tuple[str, AsyncIterator[Chunk]]:
    reservation = await _reserve_for(request, services, model, gen)
    source = services.router.stream_with_fallback if gen.json_mode is None else services.structured.stream_json
    try:
        name, chunks = await cancel_on_disconnect(request, source(model, gen, fallbacks))
    except BaseException:
        if reservation is not None:
            await reservation.settle(0)
        raise
    return name, _counted(services, name, chunks, reservation)


async def _counted(
    services: Services, model: str, chunks: AsyncIterator[Chunk], reservation: Reservation | None
) -> AsyncIterator[Chunk]:
    """Pass the chunks on; the last one's usage is charged to the caller. Closing this closes the source at once
    (a client that went away stops the generation); a stream that ends without usage is charged, on the caller's
    budgets, what was reserved for its prompt plus a token per chunk sent."""
    used: int | None = None
    sent = 0
    try:
        async for chunk in chunks:
            if chunk.usage is not None:
                used = chunk.usage.total_tokens
                _account(services, model, chunk.usage)
            sent += 1
            yield chunk
    except Exception:
        note_failure(model)
        raise
    finally:
        if reservation is not None:
            await reservation.settle(used if used is not None else min(reservation.granted, reservation.prompt + sent))
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()

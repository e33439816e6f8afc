"""Run a generation for any API surface: through the JSON pipeline when JSON was asked for, otherwise straight
through ModelRouter; a disconnect cancels the work. Streams are opened (routed, fallen back, first chunk received)
before the response starts, so errors that happen before any output are still plain HTTP errors.

The model name is resolved once, here; every generation is charged to its caller through the accounting service
(services/usage/accounting.py): held on their budgets before it runs, settled and recorded after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from sop_llm.api.disconnect import cancel_on_disconnect
from sop_llm.api.request_state import caller_key
from sop_llm.providers.types import Chunk, Completion, GenerationRequest
from sop_llm.services import priority
from sop_llm.services.container import Services
from sop_llm.services.usage.accounting import Charge


async def _open(request: Request, services: Services, model: str | None, gen: GenerationRequest) -> Charge:
    priority.caller.set(caller_key(request.scope))  # the local engine shares its slots fairly between callers
    await services.catalog.ensure(model)  # a model pulled by another process is served from its first request
    return await services.accounting.open_generation(services.router.resolve(model), gen)


async def run_generation(
    request: Request, services: Services, model: str | None, gen: GenerationRequest, fallbacks: list[str] | None
) -> tuple[str, Completion, dict[str, Any] | None]:
    """(model that answered, completion, JSON verdict or None)."""
    charge = await _open(request, services, model, gen)
    try:
        if gen.json_mode is None:
            name, completion = await cancel_on_disconnect(
                request, services.router.generate_with_fallback(charge.model, gen, fallbacks)
            )
            verdict = None
        else:
            name, completion, outcome = await cancel_on_disconnect(
                request, services.structured.generate_json(charge.model, gen, fallbacks)
            )
            verdict = outcome.describe()
        charge.answered(name, completion.usage)
    finally:
        await services.accounting.close(charge)
    return name, completion, verdict


async def open_generation_stream(
    request: Request, services: Services, model: str | None, gen: GenerationRequest, fallbacks: list[str] | None
) -> tuple[str, AsyncIterator[Chunk]]:
    charge = await _open(request, services, model, gen)
    source = services.router.stream_with_fallback if gen.json_mode is None else services.structured.stream_json
    try:
        name, chunks = await cancel_on_disconnect(request, source(charge.model, gen, fallbacks))
    except BaseException:
        await services.accounting.close(charge)
        raise
    return name, services.accounting.counted(charge, name, chunks)

"""Charge a request that is not a generation (embeddings, rerank, …) to its caller: its tokens reserved on the
caller's budgets before it runs and settled with what it used, and noted for the usage tally."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.requests import Request

from sop_llm.api.request_state import principal_of
from sop_llm.services.container import Services
from sop_llm.services.usage.budgets import Reservation, estimate_tokens
from sop_llm.services.usage.meter import note_usage


async def reserve_tokens(
    request: Request, services: Services, model: str, want: int, least: int = 1
) -> Reservation | None:
    """Hold up to `want` tokens (at least `least`) of `model` on the caller's budgets (None when none applies);
    429 when one has less room than `least`."""
    return await services.budgets.reserve(principal_of(request).subject, model, want, least)


@dataclass(slots=True)
class Charge:
    model: str
    tokens: int = 0  # what the request really used; set by the handler before the block ends


@asynccontextmanager
async def metered(request: Request, services: Services, model: str, input_chars: int) -> AsyncIterator[Charge]:
    reservation = await reserve_tokens(request, services, model, estimate_tokens(input_chars))
    charge = Charge(model)
    try:
        yield charge
    finally:
        if reservation is not None:
            await reservation.settle(charge.tokens)
    note_usage(charge.model, charge.tokens)

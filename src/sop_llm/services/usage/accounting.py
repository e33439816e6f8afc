"""Every model call is charged here, whichever surface or background task made it: its tokens are held on the
caller's budgets before it runs (budgets.py), and when it ends the hold is settled with what the model reported,
which also goes to the request's record (record.py: the usage tally and the token rate limit read it) and to the
per-model token counters. The caller is the record's subject: the API key or token of an HTTP request, the owner
of a task or of a batch. A generation whose `max_tokens` does not fit what is left of a budget is shortened to fit.

    charge = await accounting.open_generation(model, request)   # 429 budget_exceeded when nothing is left
    try:
        completion = await run(...)
        charge.answered(model, completion.usage)
    finally:
        await accounting.close(charge)

`charged` / `charged_generation` are that as a block; `counted` does it for a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sop_llm.providers.types import Chunk, GenerationRequest, Usage
from sop_llm.services.usage.budgets import Budgets, Reservation, estimate_tokens
from sop_llm.services.usage.record import current, note_failure, note_first_token

# (model, prompt tokens, completion tokens): the per-model token counters (Prometheus).
TokenObserver = Callable[[str, int, int], None]


@dataclass(slots=True)
class Charge:
    """One model call: what it holds on the caller's budgets, and what it used once the model answered."""

    model: str
    reservation: Reservation | None
    prompt_estimate: int = 0
    usage: Usage | None = None
    answered_by: str | None = None  # the model that answered (a fallback's name when one did)
    closed: bool = field(default=False)

    def answered(self, model: str, usage: Usage) -> None:
        self.answered_by, self.usage = model, usage

    def used(self, tokens: int, model: str | None = None) -> None:
        """A call that reports one count (embeddings, rerank): all of it input."""
        self.answered(model or self.model, Usage(tokens, 0))


class Accounting:
    def __init__(self, budgets: Budgets, observe_tokens: TokenObserver) -> None:
        self._budgets = budgets
        self._observe_tokens = observe_tokens

    async def open(self, model: str, want: int, least: int = 1) -> Charge:
        """Hold up to `want` tokens (at least `least`) of `model` for the request's caller; 429 `budget_exceeded`
        when one of their budgets has less room than `least`."""
        record = current()
        reservation = await self._budgets.reserve(record.subject, model, want, least)
        record.model = model  # it reached a model: counted as a request of this model even if it reports nothing
        return Charge(model, reservation)

    async def open_generation(self, model: str, request: GenerationRequest) -> Charge:
        """Hold the prompt (estimated) and `max_tokens`, lowering `max_tokens` to what is left of a budget."""
        prompt = estimate_tokens(request.prompt_chars())
        charge = await self.open(model, prompt + request.max_tokens, least=prompt + 1)
        charge.prompt_estimate = prompt
        if charge.reservation is not None and charge.reservation.granted < prompt + request.max_tokens:
            request.max_tokens = max(1, charge.reservation.granted - prompt)
        return charge

    async def close(self, charge: Charge, sent: int | None = None) -> None:
        """Settle the hold with what the call used and note it for the request (once). A call that ended with
        no usage reported settles, when `sent` chunks went out, its prompt estimate plus a token a chunk; else 0."""
        if charge.closed:
            return
        charge.closed = True
        usage = charge.usage
        if charge.reservation is not None:
            if usage is not None:
                used = usage.total_tokens
            elif sent is not None:
                used = min(charge.reservation.granted, charge.prompt_estimate + sent)
            else:
                used = 0
            await charge.reservation.settle(used)
        if usage is None:
            return
        model = charge.answered_by or charge.model
        record = current()
        record.model = model
        record.prompt_tokens += usage.prompt_tokens
        record.completion_tokens += usage.completion_tokens
        self._observe_tokens(model, usage.prompt_tokens, usage.completion_tokens)

    @asynccontextmanager
    async def charged(self, model: str, input_chars: int) -> AsyncIterator[Charge]:
        """A call whose input is all it costs (embeddings, rerank): set `charge.used(tokens)` inside."""
        charge = await self.open(model, estimate_tokens(input_chars))
        try:
            yield charge
        finally:
            await self.close(charge)

    @asynccontextmanager
    async def charged_generation(self, model: str, request: GenerationRequest) -> AsyncIterator[Charge]:
        """A generation: set `charge.answered(model, usage)` inside."""
        charge = await self.open_generation(model, request)
        try:
            yield charge
        finally:
            await self.close(charge)

    async def counted(self, charge: Charge, model: str, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """Pass a stream's chunks on and charge the usage its last one reports. Closing this closes the source at
        once (a client that went away stops the generation); a stream that ends without usage settles what was
        held for its prompt plus a token per chunk sent."""
        sent = 0
        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    charge.answered(model, chunk.usage)
                if not sent:
                    note_first_token()
                sent += 1
                yield chunk
        except Exception:
            note_failure(model)
            raise
        finally:
            await self.close(charge, sent)
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

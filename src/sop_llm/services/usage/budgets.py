"""Token budgets per caller: `tokens_per_day` and `tokens_per_month` (UTC), for every model (`*`) or one model.

Before a request runs, its tokens are reserved on every budget that applies (the prompt estimated at four
characters a token, plus its `max_tokens`); a reservation is granted only up to the room that is left, and the
request's `max_tokens` is lowered to fit. Afterwards the reservation is settled with what the model reported, so
the counters hold exactly the tokens used. A caller whose budget has less room left than the prompt and one token
gets 429 `budget_exceeded` saying when it resets. Only a prompt longer than its estimate can overshoot a budget,
by that difference.

Budgets live in the database (set with the admin API or `sop-llm keys budget`), read by each replica at most
BUDGET_CACHE_SECONDS old; the counters are shared through Redis (see counters.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sop_llm.infra.errors import BadRequestError, BudgetExceededError, NotFoundError
from sop_llm.infra.redis_keys import budget_key
from sop_llm.services.usage.counters import Counters, MemoryCounters
from sop_llm.services.usage.model import EVERY_MODEL, BudgetRow
from sop_llm.services.usage.periods import Period, Window, window

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Limit:
    model: str  # a model name or EVERY_MODEL
    period: Period
    tokens: int


class Reservation:
    """Tokens held for one request; `settle` replaces them with what it used (once)."""

    def __init__(self, counters: Counters, keys: list[str], granted: int) -> None:
        self._counters = counters
        self._keys = keys
        self.granted = granted
        self.prompt = 0  # the estimated prompt tokens inside `granted`
        self._settled = False

    async def settle(self, used: int) -> None:
        if self._settled:
            return
        self._settled = True
        await self._counters.add(self._keys, used - self.granted)


def estimate_tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def make_counters(redis_url: str | None, timeout: float) -> Counters:
    """Counters in Redis when a URL is given (shared by every replica), else in this process."""
    if not redis_url:
        return MemoryCounters()
    from sop_llm.services.usage.redis_counters import RedisCounters

    return RedisCounters(redis_url, timeout)


class Budgets:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        counters: Counters,
        cache_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._counters = counters
        self._cache_seconds = cache_seconds
        self._table: dict[str, list[Limit]] | None = None
        self._loaded_at = 0.0

    async def _limits(self, subject: str) -> list[Limit]:
        if self._table is None or time.monotonic() - self._loaded_at > self._cache_seconds:
            async with self._sessions() as session:
                rows = list(await session.scalars(select(BudgetRow)))
            table: dict[str, list[Limit]] = {}
            for row in rows:
                limits = table.setdefault(row.subject, [])
                if row.tokens_per_day is not None:
                    limits.append(Limit(row.model, "day", row.tokens_per_day))
                if row.tokens_per_month is not None:
                    limits.append(Limit(row.model, "month", row.tokens_per_month))
            self._table, self._loaded_at = table, time.monotonic()
        return self._table.get(subject, [])

    async def reserve(self, subject: str | None, model: str, want: int, least: int = 1) -> Reservation | None:
        """Hold up to `want` tokens (at least `least`) of `model` for `subject`; None when no budget applies.
        Raises BudgetExceededError when one of them has less room left than `least`."""
        if subject is None:
            return None
        limits = [limit for limit in await self._limits(subject) if limit.model in (model, EVERY_MODEL)]
        if not limits:
            return None
        now = datetime.now(UTC)
        windows = [window(limit.period, now) for limit in limits]
        keys = [budget_key(subject, limit.model, w.label) for limit, w in zip(limits, windows, strict=True)]
        ttls = [int(w.seconds_left(now)) + 3600 for w in windows]
        least = max(1, least)
        outcome = await self._counters.reserve(keys, [limit.tokens for limit in limits], ttls, max(least, want), least)
        if outcome.exhausted is not None:
            raise _exceeded(limits[outcome.exhausted], windows[outcome.exhausted], now, least)
        return Reservation(self._counters, keys, outcome.granted)

    async def set(self, subject: str, model: str, per_day: int | None, per_month: int | None) -> BudgetRow:
        if per_day is None and per_month is None:
            raise BadRequestError("give tokens_per_day, tokens_per_month or both", param="tokens_per_day")
        row = BudgetRow(
            subject=subject,
            model=model,
            tokens_per_day=per_day,
            tokens_per_month=per_month,
            updated_at=datetime.now(UTC),
        )
        async with self._sessions() as session, session.begin():
            await session.merge(row)
        self._table = None
        return row

    async def remove(self, subject: str, model: str) -> None:
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(BudgetRow).where(BudgetRow.subject == subject, BudgetRow.model == model)
            )
        if not getattr(result, "rowcount", 0):
            raise NotFoundError(f"no budget for '{subject}' on model '{model}'", param="subject")
        self._table = None

    async def describe(self, subject: str | None = None) -> list[dict[str, Any]]:
        """Every budget (or one caller's) with the tokens used in the current day and month."""
        query = select(BudgetRow).order_by(BudgetRow.subject, BudgetRow.model)
        if subject is not None:
            query = query.where(BudgetRow.subject == subject)
        async with self._sessions() as session:
            rows = list(await session.scalars(query))
        now = datetime.now(UTC)
        day, month = window("day", now), window("month", now)
        views = []
        for row in rows:
            used_day, used_month = await self._counters.used(
                [budget_key(row.subject, row.model, day.label), budget_key(row.subject, row.model, month.label)]
            )
            views.append(
                {
                    "subject": row.subject,
                    "model": row.model,
                    "tokens_per_day": row.tokens_per_day,
                    "tokens_per_month": row.tokens_per_month,
                    "used_today": used_day,
                    "used_this_month": used_month,
                    "day_resets_at": day.resets_at.isoformat(),
                    "month_resets_at": month.resets_at.isoformat(),
                    "updated_at": row.updated_at.isoformat(),
                }
            )
        return views

    async def aclose(self) -> None:
        await self._counters.aclose()


def _exceeded(limit: Limit, at: Window, now: datetime, least: int) -> BudgetExceededError:
    which = "every model" if limit.model == EVERY_MODEL else f"model '{limit.model}'"
    left = at.seconds_left(now)
    hours, minutes = int(left // 3600), int(left % 3600 // 60)
    room = "" if least == 1 else f" (or has fewer than the ~{least} tokens this request needs at least)"
    return BudgetExceededError(
        f"token budget used up{room}: {limit.tokens} tokens per {limit.period} on {which} for this caller; it "
        f"resets at {at.resets_at.isoformat()} (in {hours} h {minutes} min)",
        retry_after=left,
        details={
            "limit": limit.tokens,
            "period": limit.period,
            "model": limit.model,
            "resets_at": at.resets_at.isoformat(),
        },
    )

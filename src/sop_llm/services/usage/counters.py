"""Budget counters: tokens used per (caller, model, period), reserved atomically before a request runs and settled
with what it really used. In Redis (one Lua script checks every limit and reserves in one step, so replicas can
never grant the same tokens twice) when REDIS_URL is set, else in this process. A Redis that fails is left alone for
a few seconds, and this process's own counters stand in meanwhile (logged).

Here: what counters do (`Counters`) and the in-process ones. The Redis side is redis_counters.py, imported only when
REDIS_URL is set (budgets.py `make_counters` chooses)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Outcome:
    granted: int
    exhausted: int | None  # index of the limit with too little room left


class Counters(Protocol):
    async def reserve(
        self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int], want: int, least: int
    ) -> Outcome:
        """Grant up to `want` tokens on every key at once, each within its limit (`ttls`: how long a key lives, s);
        nothing, and which limit, when one has less room than `least`."""
        ...

    async def add(self, keys: Sequence[str], delta: int) -> None:
        """Move every key by `delta` (negative: give back what a reservation did not use)."""
        ...

    async def used(self, keys: Sequence[str]) -> list[int]: ...

    async def aclose(self) -> None: ...


class MemoryCounters:
    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    async def reserve(
        self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int], want: int, least: int
    ) -> Outcome:
        grant = want
        for i, (key, limit) in enumerate(zip(keys, limits, strict=True)):
            room = limit - self._used.get(key, 0)
            if room < least:
                return Outcome(0, i)
            grant = min(grant, room)
        for key in keys:
            self._used[key] = self._used.get(key, 0) + grant
        return Outcome(grant, None)

    async def add(self, keys: Sequence[str], delta: int) -> None:
        for key in keys:
            self._used[key] = self._used.get(key, 0) + delta

    async def used(self, keys: Sequence[str]) -> list[int]:
        return [self._used.get(key, 0) for key in keys]

    async def aclose(self) -> None:
        return None

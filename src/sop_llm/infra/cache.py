"""The cache interface and its in-memory backend (bounded LRU with TTL).

Keys come from infra/redis_keys.py; values are bytes so every backend stores the same thing.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0


class Cache(ABC):
    backend: str

    def __init__(self) -> None:
        self.stats = CacheStats()

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    @abstractmethod
    async def set_many(self, items: Iterable[tuple[str, bytes]], ttl: int | None = None) -> None: ...

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key]))[0]

    async def set(self, key: str, value: bytes, ttl: int | None = None) -> None:
        await self.set_many([(key, value)], ttl)

    @abstractmethod
    async def take(self, key: str) -> bytes | None:
        """Get and delete in one step: of two callers taking the same key, one gets it."""

    async def aclose(self) -> None:
        return None


class MemoryCache(Cache):
    backend = "memory"

    def __init__(self, max_items: int, default_ttl: int) -> None:
        super().__init__()
        self._max_items = max_items
        self._default_ttl = default_ttl
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        found: list[bytes | None] = []
        for key in keys:
            entry = self._items.get(key)
            if entry is None or entry[0] < now:
                if entry is not None:
                    del self._items[key]
                self.stats.misses += 1
                found.append(None)
                continue
            self._items.move_to_end(key)
            self.stats.hits += 1
            found.append(entry[1])
        return found

    async def set_many(self, items: Iterable[tuple[str, bytes]], ttl: int | None = None) -> None:
        expires = time.monotonic() + (ttl or self._default_ttl)
        for key, value in items:
            self._items[key] = (expires, value)
            self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    async def take(self, key: str) -> bytes | None:
        entry = self._items.pop(key, None)
        return entry[1] if entry is not None and entry[0] >= time.monotonic() else None

    def __len__(self) -> int:
        return len(self._items)

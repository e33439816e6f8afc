"""Which local models are in memory, and for how long.

- **On demand.** A request for a model that is not loaded loads it and waits (at most MODEL_LOAD_TIMEOUT, then 503
  with Retry-After); concurrent first requests share the one load.
- **Keep alive.** After its last request a model stays loaded for its keep-alive: the request's own `keep_alive`
  when it gave one (0: unload once answered), else the model's config, else forever for models loaded at startup
  and MODEL_KEEP_ALIVE for the others. Then it is unloaded, and loads again on the next request.
- **Memory budget.** Loaded models together hold at most MODEL_MEMORY_BUDGET. A model's size is estimated from its
  files before it loads (weights, KV cache, buffers) and measured after (the growth of this process's resident
  memory across the load); the larger counts. Loading a model that would go over the budget first unloads the
  least recently used idle models; a model with requests in flight is never unloaded (the load waits for one to
  become idle); a model that would not fit even alone is refused before any memory is touched.

Loads run one at a time, so each judges the room left and measures its own growth without another load in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psutil
from loguru import logger

from sop_llm.infra.errors import MemoryExceededError, ModelNotLoadedError, ModelTooLargeError
from sop_llm.infra.settings import Settings
from sop_llm.providers.base import GenerationProvider
from sop_llm.services.local.load_state import LoadState, ModelState
from sop_llm.services.local.memory_guard import check_memory

REAP_INTERVAL = 1.0  # seconds between looks for models idle past their keep-alive


@dataclass
class Footprint:
    """A model's memory: estimated from its files before loading, measured across the load."""

    estimate: int = 0
    measured: int = 0

    @property
    def counted(self) -> int:
        return max(self.estimate, self.measured)


@dataclass
class Residence:
    """One model's place in memory."""

    keep_alive: float  # seconds idle before unloading; math.inf: never
    footprint: Footprint
    last_used: float = 0.0  # monotonic time its last request ended
    expires_at: float = math.inf  # monotonic time it unloads when still idle
    in_flight: int = 0  # requests admitted or waiting for it
    holding: bool = False  # its memory counts against the budget: from when room was made for it until unloaded
    put_away: bool = False  # unloaded by keep-alive or to make room: it loads again on demand


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


class Residency:
    """Loads, keeps and unloads the local models of one process (see the module docstring). `unload` is the
    manager's own unload (it stops admission and lets requests finish)."""

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, GenerationProvider],
        states: dict[str, LoadState],
        unload: Callable[[str], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._budget = settings.memory_budget_bytes()
        self._providers = dict(providers)
        self._states = states
        self._unload = unload
        self.places = {name: Residence(_keep_alive(p, settings), Footprint()) for name, p in providers.items()}
        self._one_load = asyncio.Lock()
        self._became_idle = asyncio.Event()  # set when a model's last request ends
        self._reaper: asyncio.Task[None] | None = None
        self._unloading: set[asyncio.Task[None]] = set()

    @property
    def budget(self) -> int:
        return self._budget

    def add(self, name: str, provider: GenerationProvider, state: LoadState) -> None:
        """Keep `name` (registered while serving) like the others."""
        self._providers[name], self._states[name] = provider, state
        self.places[name] = Residence(_keep_alive(provider, self._settings), Footprint())

    def remove(self, name: str) -> None:
        """Forget `name` (unloaded already)."""
        for table in (self._providers, self._states, self.places):
            table.pop(name, None)

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="keep-alive")

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        await asyncio.gather(*self._unloading, return_exceptions=True)

    # -- loading -----------------------------------------------------------------------------------------
    def load(self, name: str) -> ModelState:
        """Start loading `name` in the background (nothing changes when it is loaded or loading)."""
        self.places[name].put_away = False
        return self._states[name].start_load(lambda: self._load(name))

    async def _load(self, name: str) -> None:
        provider, place = self._providers[name], self.places[name]
        async with self._one_load:
            place.footprint = Footprint(estimate=await asyncio.to_thread(_estimate, provider))
            await self._make_room(name, place.footprint.estimate)
            check_memory(self._settings.llm_memory_threshold)
            place.holding = True
            before = _resident()
            try:
                await provider.load()
            except BaseException:
                place.holding = False
                raise
            place.footprint.measured = max(0, _resident() - before)
        place.last_used = time.monotonic()
        place.expires_at = place.last_used + place.keep_alive

    async def ready(self, name: str) -> None:
        """Return once `name` is loaded: load it if it is not (or its last load failed for a reason that may pass),
        waiting at most MODEL_LOAD_TIMEOUT."""
        state = self._states[name]
        if state.state is ModelState.READY:
            return
        retry = state.state is ModelState.FAILED and state.error is not None and state.error.retryable
        if state.state is ModelState.UNLOADED or retry:
            self.load(name)
        timeout = self._settings.model_load_timeout
        await state.wait(timeout)
        if state.state is ModelState.LOADING:
            raise ModelNotLoadedError(
                f"model '{name}' is still loading after MODEL_LOAD_TIMEOUT={timeout:g} s; retry shortly",
                retry_after=max(1.0, timeout / 4),
            )
        state.require_ready()

    async def _make_room(self, name: str, need: int) -> None:
        if need > self._budget:
            raise ModelTooLargeError(
                f"model '{name}' needs about {gib(need)} (weights, KV cache for its context and slots, buffers); "
                f"MODEL_MEMORY_BUDGET is {gib(self._budget)}, so it cannot load even alone. Raise "
                "MODEL_MEMORY_BUDGET, or lower the model's context_length or parallel, or use a smaller quantization",
                param="model",
                details={"needed_bytes": need, "budget_bytes": self._budget},
            )
        deadline = time.monotonic() + self._settings.model_load_timeout
        while True:
            self._became_idle.clear()  # before looking: a request ending after this wakes the wait below
            held = self._held(besides=name)
            if held + need <= self._budget:
                return
            victim = self._least_recently_used_idle(besides=name)
            if victim is not None:
                await self._put_away(victim, f"to make room for {name}")
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise MemoryExceededError(
                    f"model '{name}' needs about {gib(need)}; the models in use hold {gib(held)} of "
                    f"MODEL_MEMORY_BUDGET={gib(self._budget)} and none became idle within "
                    f"MODEL_LOAD_TIMEOUT={self._settings.model_load_timeout:g} s; retry later",
                    details={"needed_bytes": need, "held_bytes": held, "budget_bytes": self._budget},
                    retry_after=5,
                )
            with contextlib.suppress(TimeoutError):  # the deadline is checked above
                await asyncio.wait_for(self._became_idle.wait(), left)

    def _held(self, besides: str) -> int:
        return sum(place.footprint.counted for name, place in self.places.items() if name != besides and place.holding)

    def released(self, name: str) -> None:
        """`name` was unloaded: its memory no longer counts."""
        self.places[name].holding = False

    def _least_recently_used_idle(self, besides: str) -> str | None:
        idle = [
            (place.last_used, name)
            for name, place in self.places.items()
            if name != besides and place.in_flight == 0 and self._states[name].state is ModelState.READY
        ]
        return min(idle)[1] if idle else None

    # -- use -----------------------------------------------------------------------------------------------
    def enter(self, name: str) -> None:
        """A request for `name` is admitted (or waits for it)."""
        self.places[name].in_flight += 1

    def leave(self, name: str, keep_alive: float | None) -> None:
        """A request for `name` ended; `keep_alive`: the request's own (seconds, math.inf: forever), if it gave one."""
        place = self.places[name]
        place.in_flight -= 1
        place.last_used = time.monotonic()
        place.expires_at = place.last_used + (place.keep_alive if keep_alive is None else keep_alive)
        if place.in_flight == 0:
            self._became_idle.set()
            if place.expires_at <= place.last_used:  # after the answer has gone, not on its way
                unloading = asyncio.create_task(self._put_away(name, "its keep-alive is 0"))
                self._unloading.add(unloading)
                unloading.add_done_callback(self._unloading.discard)

    def hold(self, name: str, seconds: float) -> None:
        """Keep `name` loaded for `seconds` from now (math.inf: until told otherwise), whatever its keep-alive."""
        self.places[name].expires_at = time.monotonic() + seconds

    async def _put_away(self, name: str, why: str) -> None:
        place = self.places[name]
        if place.in_flight or self._states[name].state is not ModelState.READY:
            return
        logger.info("unloading model {}: {}", name, why)
        place.put_away = True
        await self._unload(name)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            now = time.monotonic()
            for name, place in list(self.places.items()):
                if place.expires_at <= now:
                    await self._put_away(name, f"idle for {place.keep_alive:g} s (its keep-alive)")

    def describe(self, name: str) -> dict[str, object]:
        place = self.places[name]
        left = place.expires_at - time.monotonic()
        loaded = self._states[name].state is ModelState.READY
        return {
            "keep_alive_s": None if math.isinf(place.keep_alive) else place.keep_alive,
            "expires_in_s": round(max(0.0, left), 1) if loaded and not math.isinf(left) else None,
            "memory": {
                "estimated_bytes": place.footprint.estimate,
                "measured_bytes": place.footprint.measured,
                "held_bytes": place.footprint.counted if place.holding else 0,
            },
            "unloaded_when_idle": place.put_away,
        }


def _keep_alive(provider: GenerationProvider, settings: Settings) -> float:
    configured = provider.model_config.keep_alive
    if configured is not None:
        return configured
    return math.inf if provider.model_config.load_on_startup else settings.keep_alive_seconds()


def _estimate(provider: GenerationProvider) -> int:
    """The provider's estimate; 0 when its files cannot be read (the load then says what is wrong with them)."""
    try:
        return provider.memory_estimate()
    except (OSError, ValueError) as exc:
        logger.warning("model {}: no memory estimate from its files ({}); measuring after the load", provider.name, exc)
        return 0


def _resident() -> int:
    return int(psutil.Process().memory_info().rss)

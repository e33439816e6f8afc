"""Local model lifecycle and admission: loading (at startup, on request, or on demand with keep-alive and the
memory budget: residency.py), per-model semaphore and wait-queue cap, memory guard, timeouts and cancellation
around a provider's stream.

A model on the batched scheduler (models.yaml `scheduler: batched`, the default for llamacpp) queues its requests
itself: it has `parallel` slots, each with its own share of the KV cache, and gives them out by class and by caller
in turn (providers/local/batching), under the same queue bound and timeout. Every request is stamped here with
its caller and class (services/priority.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sop_llm.infra.errors import GenerationTimeoutError, ModelNotFoundError, OverloadedError
from sop_llm.infra.settings import Settings
from sop_llm.providers.base import GenerationProvider
from sop_llm.providers.types import AdmissionLimits, Chunk, Completion, GenerationRequest, WorkClass
from sop_llm.services.local.load_state import LoadState, ModelState
from sop_llm.services.local.memory_guard import check_memory
from sop_llm.services.local.residency import Residency
from sop_llm.services.priority import stamp

if TYPE_CHECKING:
    from sop_llm.providers.local.batching.stats import SchedulerSnapshot


@dataclass
class Admission:
    active: int = 0
    waiting: int = 0
    peak_active: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0  # the client went away or the request was cancelled


@dataclass
class LocalModel:
    provider: GenerationProvider
    load_state: LoadState
    permits: int
    semaphore: asyncio.Semaphore | None  # None: the provider queues its requests itself
    admission: Admission = field(default_factory=Admission)

    @classmethod
    def create(cls, name: str, provider: GenerationProvider, settings: Settings) -> LocalModel:
        if provider.queues_requests:
            provider.set_admission_limits(
                AdmissionLimits(
                    settings.llm_max_queued_requests,
                    settings.llm_queue_timeout,
                    settings.llm_max_concurrent_per_caller,
                )
            )
            return cls(provider, LoadState(name), 0, None)
        permits = settings.llm_max_concurrent_requests
        return cls(provider, LoadState(name), permits, asyncio.Semaphore(permits))


class LocalModels:
    def __init__(self, settings: Settings, providers: dict[str, GenerationProvider]) -> None:
        self._settings = settings
        self._models = {name: LocalModel.create(name, provider, settings) for name, provider in providers.items()}
        self.residency = Residency(
            settings,
            providers,
            {name: model.load_state for name, model in self._models.items()},
            self.unload,
        )

    def start(self) -> None:
        self.residency.start()
        for name, model in self._models.items():
            if model.provider.model_config.load_on_startup:
                self.load(name)

    def add(self, name: str, provider: GenerationProvider) -> None:
        """Serve `name` as well (a model registered while the service runs); it loads on its first request."""
        model = LocalModel.create(name, provider, self._settings)
        self._models[name] = model
        self.residency.add(name, provider, model.load_state)

    async def remove(self, name: str) -> None:
        """Stop serving `name`: unload it (its running requests finish first) and forget it."""
        await self.unload(name)
        self._models.pop(name, None)
        self.residency.remove(name)

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def _get(self, name: str) -> LocalModel:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(f"'{name}' is not a local model", param="model")
        return model

    def load(self, name: str) -> ModelState:
        """Start loading `name` in the background, making room under the memory budget first."""
        self._get(name)
        return self.residency.load(name)

    async def unload(self, name: str) -> None:
        """Stop admitting, let running generations finish, then free the model."""
        model = self._get(name)
        await model.load_state.cancel_load()
        model.load_state.state = ModelState.UNLOADED
        try:
            if model.semaphore is None:  # the provider lets running requests finish or fails them itself
                await model.provider.aclose()
                return
            permits = model.permits
            for _ in range(permits):
                await model.semaphore.acquire()
            try:
                await model.provider.aclose()
            finally:
                for _ in range(permits):
                    model.semaphore.release()
        finally:
            self.residency.released(name)

    async def aclose(self) -> None:
        await self.residency.aclose()
        for name in self._models:
            await self.unload(name)

    def names(self) -> list[str]:
        return list(self._models)

    def default_names(self) -> list[str]:
        return [n for n, m in self._models.items() if m.provider.model_config.load_on_startup]

    async def ready_provider(self, name: str) -> GenerationProvider:
        """The provider of a loaded model (loaded now if it is not), for work that needs no generation slot
        (tokenizing)."""
        model = self._get(name)
        self.residency.enter(name)
        try:
            await self.residency.ready(name)
        finally:
            self.residency.leave(name, None)
        return model.provider

    def state(self, name: str) -> ModelState:
        return self._get(name).load_state.state

    def serving(self, name: str) -> bool:
        """Loaded, or unloaded (idle past its keep-alive, to make room, or by an admin) and loading on its next
        request; not while its first load runs or after a load failed."""
        return self.state(name) in (ModelState.READY, ModelState.UNLOADED)

    def scheduler_snapshots(self) -> dict[str, SchedulerSnapshot]:
        """The batched schedulers' state, by model (models on the serial scheduler have none)."""
        snapshots = {name: _scheduler_snapshot(model) for name, model in self._models.items()}
        return {name: snapshot for name, snapshot in snapshots.items() if snapshot is not None}

    def describe(self, name: str) -> dict[str, Any]:
        model = self._get(name)
        a = model.admission
        snapshot = _scheduler_snapshot(model)
        scheduler = {"scheduler": describe_scheduler(snapshot)} if snapshot is not None else {}
        return {
            **scheduler,
            **model.load_state.describe(),
            **self.residency.describe(name),
            "stats": {
                "active": a.active,
                "waiting": a.waiting,
                "peak_active": a.peak_active,
                "completed": a.completed,
                "failed": a.failed,
                "requests_cancelled": a.cancelled,
                **model.provider.stats(),
            },
        }

    @asynccontextmanager
    async def _admit(self, name: str, keep_alive: float | None) -> AsyncIterator[GenerationProvider]:
        """Admit a request: load the model if needed, wait for a slot, count it while it runs. `keep_alive`: the
        request's own, in seconds, if it gave one."""
        model = self._get(name)
        check_memory(self._settings.llm_memory_threshold)
        self.residency.enter(name)
        try:
            await self.residency.ready(name)
            if model.semaphore is None:  # the provider queues and admits the request itself
                with _counted(model.admission):
                    yield model.provider
                return
            await self._wait_for_slot(name, model, model.semaphore)
            try:
                with _counted(model.admission):
                    yield model.provider
            finally:
                model.semaphore.release()
        finally:
            self.residency.leave(name, keep_alive)

    async def _wait_for_slot(self, name: str, model: LocalModel, semaphore: asyncio.Semaphore) -> None:
        a = model.admission
        if semaphore.locked() and a.waiting >= self._settings.llm_max_queued_requests:
            raise OverloadedError(
                f"model '{name}' is busy: {a.active} running and {a.waiting} waiting "
                f"(LLM_MAX_CONCURRENT_REQUESTS={model.permits}, "
                f"LLM_MAX_QUEUED_REQUESTS={self._settings.llm_max_queued_requests}); retry shortly",
                retry_after=1,
            )
        a.waiting += 1
        try:
            async with asyncio.timeout(self._settings.llm_queue_timeout):
                await semaphore.acquire()
        except TimeoutError:
            raise OverloadedError(
                f"model '{name}' is busy: waited LLM_QUEUE_TIMEOUT={self._settings.llm_queue_timeout:g} s for one "
                f"of its {model.permits} generation slots; retry later",
                retry_after=self._settings.llm_queue_timeout,
            ) from None
        finally:
            a.waiting -= 1

    async def generate_admitted(self, name: str, request: GenerationRequest) -> Completion:
        """Wait for a slot (at most LLM_QUEUE_TIMEOUT), then generate (at most LLM_REQUEST_TIMEOUT)."""
        stamp(request)
        async with self._admit(name, request.keep_alive) as provider:
            try:
                async with asyncio.timeout(self._settings.llm_request_timeout):
                    return await provider.generate(request)
            except TimeoutError as exc:
                raise self._timeout(name) from exc

    async def stream_admitted(self, name: str, request: GenerationRequest) -> AsyncIterator[Chunk]:
        # A stream is primed in one task and drained in another, so the deadline is applied per chunk
        # (a timeout context is bound to the task that enters it). It starts once the stream is admitted.
        stamp(request)
        admission = self._admit(name, request.keep_alive)
        provider = await admission.__aenter__()
        deadline = asyncio.get_running_loop().time() + self._settings.llm_request_timeout
        chunks = provider.stream(request)
        error: BaseException | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise self._timeout(name) from exc
                yield chunk
        except BaseException as exc:
            error = exc
            raise
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            if error is None:
                await admission.__aexit__(None, None, None)
            else:
                await admission.__aexit__(type(error), error, error.__traceback__)

    def _timeout(self, name: str) -> GenerationTimeoutError:
        return GenerationTimeoutError(
            f"generation on '{name}' took longer than LLM_REQUEST_TIMEOUT={self._settings.llm_request_timeout:g} s"
        )


def _scheduler_snapshot(model: LocalModel) -> SchedulerSnapshot | None:
    read = getattr(model.provider, "scheduler_snapshot", None)
    return read() if read is not None else None


@contextmanager
def _counted(a: Admission) -> Iterator[None]:
    """Count an admitted generation as active while it runs, then by how it ended."""
    a.active += 1
    a.peak_active = max(a.peak_active, a.active)
    try:
        yield
        a.completed += 1
    except (asyncio.CancelledError, GeneratorExit):
        a.cancelled += 1
        raise
    except BaseException:
        a.failed += 1
        raise
    finally:
        a.active -= 1


def describe_scheduler(snap: SchedulerSnapshot) -> dict[str, Any]:
    """A batched model's slots by class and by caller, for GET /api/v1/models and the dashboard."""
    return {
        "slots": snap.slots,
        "running": {c.name.lower(): snap.running_by_class.get(c, 0) for c in WorkClass},
        "waiting": {c.name.lower(): snap.waiting_by_class.get(c, 0) for c in WorkClass},
        "preemptions": snap.preemptions,
        "preempted_waiting": snap.preempted_waiting,
        "callers": {caller or "-": slots for caller, slots in sorted(snap.slots_by_caller.items())},
    }

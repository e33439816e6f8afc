"""ModelPuller: pull a model from the hub into the cache and register it — with progress for a bar or a stream.

A pull resolves the spec to a plan (plan.py), checks there is room on disk, fetches each file (download.py: resumed
from what an earlier pull left, checked against the hub's checksums), reads the model's own defaults (facts.py) and
registers it under its served name (repository.py). Nothing is registered unless every file arrived whole. The
network and disk work runs on a worker thread; `pull` awaits it, `stream` yields its progress as it goes.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sop_llm.infra.errors import ConflictError, InsufficientStorageError
from sop_llm.services.models.choice import HubFile
from sop_llm.services.models.download import CachedFile, fetch
from sop_llm.services.models.facts import ModelFacts, model_facts
from sop_llm.services.models.hub import Hub, list_repository
from sop_llm.services.models.model import PulledFile, PulledModelRow
from sop_llm.services.models.plan import PullPlan, plan_for, read_json_file
from sop_llm.services.models.progress import ProgressCallback, ProgressMeter, PullDone, PullEvent, PullProgress
from sop_llm.services.models.repository import PulledModels
from sop_llm.services.models.spec import ModelSpec, served_name


@dataclass(frozen=True, slots=True)
class _Fetched:
    plan: PullPlan
    files: tuple[CachedFile, ...]
    path: Path
    facts: ModelFacts


class ModelPuller:
    def __init__(self, registry: PulledModels) -> None:
        self.registry = registry
        self.hub: Hub = registry.hub

    async def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> PulledModelRow:
        """Pull `spec` and register it as `name` (default: the spec without a hub prefix). `on_progress` is
        called on the pulling thread; setting `cancel` stops the pull (PullCancelled), keeping what arrived."""
        parsed = ModelSpec.parse(spec)
        served = served_name(name) if name else parsed.text
        existing = await self.registry.find(served)
        if existing is not None and existing.spec != parsed.text:
            raise ConflictError(
                f"'{served}' already serves {existing.spec}; remove it first or pull under another --name",
                param="name",
            )
        meter = ProgressMeter(on_progress, cancel)
        try:
            fetched = await asyncio.to_thread(self._fetch, parsed, meter)
        except asyncio.CancelledError:  # the worker thread cannot be cancelled: it stops at its next chunk
            meter.cancel.set()
            raise
        row = _row(served, fetched)
        await self.registry.add(row)
        return row

    async def stream(self, spec: str, *, name: str | None = None) -> AsyncIterator[PullEvent]:
        """Pull `spec` as `pull` does, yielding its progress events and then a PullDone; a failed pull raises
        from the iterator. Closing the iterator early stops the pull (the next one resumes it)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[PullProgress] = asyncio.Queue()
        cancel = threading.Event()

        def report(event: PullProgress) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        task = asyncio.ensure_future(self.pull(spec, name=name, on_progress=report, cancel=cancel))
        try:
            while True:
                next_event = asyncio.ensure_future(events.get())
                await asyncio.wait({next_event, task}, return_when=asyncio.FIRST_COMPLETED)
                if next_event.done():
                    yield next_event.result()
                    continue
                next_event.cancel()
                while not events.empty():  # the worker thread's last events came in before its end
                    yield events.get_nowait()
                yield PullDone(task.result())
                return
        finally:
            if not task.done():
                cancel.set()
                await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # retrieved: a stopped pull's PullCancelled is expected

    def _fetch(self, spec: ModelSpec, meter: ProgressMeter) -> _Fetched:
        """Resolve, download and check every file, and read the model's facts (blocking)."""
        meter.resolving()
        listing = list_repository(self.hub, spec.repo)

        def read_json(file: HubFile) -> object:
            quiet = ProgressMeter(None, meter.cancel).file(file.path, file.size)
            return read_json_file(fetch(self.hub, listing.repo, listing.revision, file, quiet).local)

        plan = plan_for(spec, listing, read_json)
        meter.pull_total = plan.total_bytes
        self._check_room(plan)
        files = tuple(
            fetch(self.hub, plan.repo, plan.revision, file, meter.file(file.path, file.size, file.sha256))
            for file in plan.files
        )
        by_path = {cached.file.path: cached.local for cached in files}
        path = by_path[plan.serve] if plan.serve is not None else self.hub.snapshot(plan.repo, plan.revision)
        return _Fetched(plan, files, path, model_facts(plan.kind, path))

    def _check_room(self, plan: PullPlan) -> None:
        """Refuse a pull the disk cannot hold (files already in the cache need no room)."""
        cache = self.hub.cache()
        cache.mkdir(parents=True, exist_ok=True)
        snapshot = self.hub.snapshot(plan.repo, plan.revision)
        needed = sum(file.size for file in plan.files if not (snapshot / file.path).exists())
        free = shutil.disk_usage(cache).free
        if free < needed:
            raise InsufficientStorageError(
                f"{plan.spec.text} needs {needed / 1e9:.2f} GB more and {cache} has {free / 1e9:.2f} GB free"
            )


def _row(name: str, fetched: _Fetched) -> PulledModelRow:
    plan, facts = fetched.plan, fetched.facts
    files: list[PulledFile] = [
        {"path": cached.file.path, "size": cached.file.size, "sha256": cached.sha256} for cached in fetched.files
    ]
    return PulledModelRow(
        name=name,
        spec=plan.spec.text,
        repo=plan.repo,
        revision=plan.revision,
        kind=plan.kind,
        path=str(fetched.path),
        files=files,
        size_bytes=plan.total_bytes,
        architecture=facts.architecture,
        context_length=facts.context_length,
        chat_template=facts.chat_template,
        dimensions=facts.dimensions,
        pulled_at=datetime.now(UTC),
    )

"""Per-model load state shared by the LLM and embedding managers."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from sop_llm.infra.errors import AppError, ModelNotLoadedError


class ModelState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADED = "unloaded"


class LoadState:
    """Tracks one model's state and runs its load in the background, one load at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = ModelState.UNLOADED
        self.reason: str | None = None
        self.error: AppError | None = None  # what the last failed load raised, when it was one of ours
        self.loads = 0  # loads started
        self._task: asyncio.Task[None] | None = None

    def start_load(self, load: Callable[[], Awaitable[Any]]) -> ModelState:
        """Start loading unless the model is loaded or loading already (then nothing changes); the state after."""
        if self.state is ModelState.READY or (self._task is not None and not self._task.done()):
            return self.state
        self.state, self.reason, self.error = ModelState.LOADING, None, None
        self.loads += 1
        self._task = asyncio.create_task(self._run(load), name=f"load-{self.name}")
        return self.state

    async def _run(self, load: Callable[[], Awaitable[Any]]) -> None:
        try:
            await load()
        except asyncio.CancelledError:
            self.state, self.reason = ModelState.UNLOADED, "load cancelled"
            raise
        except AppError as exc:
            self.state, self.reason, self.error = ModelState.FAILED, exc.message, exc
            logger.error("model {} failed to load: {}", self.name, exc.message)
        except Exception as exc:
            self.state, self.reason = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
            logger.exception("model {} failed to load", self.name)
        else:
            self.state, self.reason = ModelState.READY, None
            logger.info("model {} is ready", self.name)

    async def cancel_load(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait(self, seconds: float) -> None:
        """Wait at most `seconds` for the load under way (if any) to end; the load goes on after that, or when
        the waiter is cancelled."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=seconds)

    def require_ready(self) -> None:
        if self.state is ModelState.READY:
            return
        if self.state is ModelState.LOADING:
            raise ModelNotLoadedError(f"model '{self.name}' is still loading; retry shortly", retry_after=2)
        if self.state is ModelState.FAILED:
            error = self.error
            if error is not None:  # a new object: each request raises its own
                raise type(error)(
                    error.message, details=error.details, param=error.param, retry_after=error.retry_after
                )
            raise ModelNotLoadedError(
                f"model '{self.name}' failed to load: {self.reason}; fix it and POST /api/v1/models/{self.name}/load",
                details={"state": self.state.value, "reason": self.reason},
            )
        raise ModelNotLoadedError(
            f"model '{self.name}' is not loaded; POST /api/v1/models/{self.name}/load to load it",
            details={"state": self.state.value},
        )

    def describe(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason, "loads": self.loads}

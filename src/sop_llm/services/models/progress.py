"""How far a pull is, told as events: to a callback (a progress bar) or through an async stream (server-sent events).

A pull reports `resolving` once (finding what to download), then `downloading` events for each file as its bytes
arrive (or are checked, when an earlier pull left them), `verified` when a file's checksum matched, and ends with a
`PullDone` carrying the registered model — or with an error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sop_llm.services.models.model import PulledModelRow

Stage = Literal["resolving", "downloading", "verified"]
# The least time between two `downloading` events of one file (its last one is always sent).
REPORT_EVERY_S = 0.1


@dataclass(frozen=True, slots=True)
class PullProgress:
    """`file` (a path in the repository; empty while resolving) has `completed` of its `total` bytes on disk; the
    pull as a whole `pull_completed` of `pull_total`. `sha256`: the file's checksum as the hub lists it (it does for
    Git LFS files, the large ones), e.g. for Ollama's `digest`."""

    stage: Stage
    file: str
    completed: int
    total: int
    pull_completed: int
    pull_total: int
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class PullDone:
    """The pull finished: `model` is registered and can be served."""

    model: PulledModelRow


PullEvent = PullProgress | PullDone
ProgressCallback = Callable[[PullProgress], None]


class PullCancelled(Exception):
    """The consumer of a pull went away; what was downloaded stays, and the next pull resumes from it."""


class ProgressMeter:
    """Counts a pull's bytes across its files and sends the events to `report` (called on the pulling thread).
    `cancel`, once set, stops the pull at its next chunk."""

    def __init__(self, report: ProgressCallback | None, cancel: threading.Event | None = None) -> None:
        self._report = report
        self.cancel = cancel or threading.Event()
        self.pull_total = 0
        self.finished_bytes = 0  # of the files already done

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise PullCancelled

    def resolving(self) -> None:
        self.send(PullProgress("resolving", "", 0, 0, 0, 0))

    def file(self, path: str, size: int, sha256: str | None = None) -> FileMeter:
        return FileMeter(self, path, size, sha256)

    def send(self, event: PullProgress) -> None:
        if self._report is not None:
            self._report(event)


class FileMeter:
    """One file's share of a ProgressMeter. `at(position)`: the file has `position` bytes on disk (a resumed
    download starts where the last one stopped, a restarted one goes back to 0)."""

    def __init__(self, meter: ProgressMeter, path: str, size: int, sha256: str | None = None) -> None:
        self._meter = meter
        self.path = path
        self.size = size
        self.sha256 = sha256
        self._position = 0
        self._sent_at = float("-inf")

    def at(self, position: int) -> None:
        self._meter.check_cancelled()
        self._position = position
        now = time.monotonic()
        if position >= self.size or now - self._sent_at >= REPORT_EVERY_S:
            self._sent_at = now
            self._send("downloading")

    def verified(self) -> None:
        self._position = self.size
        self._send("verified")
        self._meter.finished_bytes += self.size

    def _send(self, stage: Stage) -> None:
        meter = self._meter
        done = meter.finished_bytes + self._position
        meter.send(PullProgress(stage, self.path, self._position, self.size, done, meter.pull_total, self.sha256))

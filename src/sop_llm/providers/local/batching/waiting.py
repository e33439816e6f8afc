"""Requests waiting for a slot of the batched context, and the order they get one in.

Classes first: an interactive request before a task's, a task's before a batch line's. Within a class, callers take
turns: the next slot goes to the caller holding the fewest slots (then to the one served longest ago), and a
caller's own requests keep their order. A preempted request goes back to the front of its caller's line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping

from sop_llm.providers.local.batching.slots import Job


class WaitingJobs:
    def __init__(self) -> None:
        self._lines: dict[tuple[int, str], deque[Job]] = {}
        self._served: dict[str, int] = {}  # caller -> clock of its last admission
        self._clock = 0

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def __iter__(self) -> Iterator[Job]:
        for line in list(self._lines.values()):
            yield from list(line)

    def push(self, job: Job, front: bool = False) -> None:
        line = self._lines.setdefault((job.work_class, job.caller), deque())
        if front:
            line.appendleft(job)
        else:
            line.append(job)

    def remove(self, job: Job) -> None:
        key = (job.work_class, job.caller)
        line = self._lines[key]
        line.remove(job)
        if not line:
            del self._lines[key]

    def new_requests(self) -> int:
        """Waiting requests that have not run yet (preempted ones are not counted)."""
        return sum(1 for job in self if job.parked is None)

    def by_class(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for (work_class, _), line in self._lines.items():
            counts[work_class] = counts.get(work_class, 0) + len(line)
        return counts

    def peek(self, running: Mapping[str, int], per_caller: int = 0) -> Job | None:
        """The request that gets the next free slot, given the slots each caller holds; None when every waiting
        caller is at its limit (`per_caller` slots; 0: no limit)."""
        best: tuple[int, int, int] | None = None
        chosen: Job | None = None
        for (work_class, caller), line in self._lines.items():
            held = running.get(caller, 0)
            if per_caller and held >= per_caller:
                continue
            rank = (work_class, held, self._served.get(caller, -1))
            if best is None or rank < best:
                best, chosen = rank, line[0]
        return chosen

    def take(self, job: Job) -> None:
        self.remove(job)
        self._clock += 1
        self._served[job.caller] = self._clock
        if len(self._served) > 4096:  # forget callers long gone
            for caller in sorted(self._served, key=self._served.__getitem__)[:2048]:
                del self._served[caller]

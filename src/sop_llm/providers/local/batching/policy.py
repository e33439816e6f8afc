"""Which running sequences a step decodes, and which one to preempt for a waiting request.

Classes first: while an interactive request runs, tasks' and batch lines' sequences keep their slots but wait
(a step holds only the most urgent class present). Within a class, callers share the tokens: `FairSteps` counts
the tokens each caller has been given and decodes, each step, the callers within `SLACK` tokens of the one given
the fewest. Over time every busy caller gets the same number of tokens, however many requests it keeps in flight;
callers that are level are decoded together (one batch). A caller that comes back after a pause starts `CREDIT`
tokens behind the others, so a short request from an otherwise idle caller runs at once, alone, at the speed it
would have alone: on a CPU a step's time grows with the sequences in it, so sharing steps evenly would not do that.
"""

from __future__ import annotations

from collections import Counter

from sop_llm.providers.local.batching.slots import Job, Slot

CREDIT = 48  # tokens a returning caller may get ahead of the busy ones (about a short chat's answer)
SLACK = 8  # callers this close to the least served one are decoded in the same step


def _job(slot: Slot) -> Job:
    assert slot.job is not None
    return slot.job


class FairSteps:
    """Tokens given per (class, caller), and the choice of each step's sequences."""

    def __init__(self) -> None:
        self._given: dict[tuple[int, str], float] = {}
        self._busy: set[tuple[int, str]] = set()  # who had sequences in the last step's class

    def members(self, running: list[Slot]) -> list[Slot]:
        """The sequences the next step decodes (or feeds a prompt chunk of)."""
        if not running:
            return []
        top = min(_job(s).work_class for s in running)
        groups: dict[tuple[int, str], list[Slot]] = {}
        for slot in running:
            if _job(slot).work_class == top:
                groups.setdefault((top, _job(slot).caller), []).append(slot)
        busy = [self._given[key] for key in groups if key in self._busy and key in self._given]
        for key in groups:
            if key not in self._busy:  # arriving, or back after a pause
                given = self._given.get(key, 0.0)
                self._given[key] = max(given, min(busy) - CREDIT) if busy else given
        least = min(self._given[key] for key in groups)
        chosen: list[Slot] = []
        for key, group in groups.items():
            if self._given[key] <= least + SLACK:
                chosen.extend(group)
                self._given[key] += len(group)
        self._busy = set(groups)
        if len(self._given) > 4096:  # forget callers long gone
            self._given = {key: value for key, value in self._given.items() if key in self._busy}
        return chosen


def preemption_victim(running: list[Slot], job: Job) -> Slot | None:
    """The sequence to preempt so that `job` runs now, or None to let it wait for a slot to free.

    A lower class's sequence if there is one (the lowest class, the latest admitted); otherwise, within the job's
    class, the latest admitted sequence of the caller holding the most slots, if that is at least two more than
    the job's caller holds (so no caller holds more than its share while another waits, and nothing ping-pongs).
    """
    lower = [s for s in running if _job(s).work_class > job.work_class]
    if lower:
        return max(lower, key=lambda s: (_job(s).work_class, s.admitted))
    same = [s for s in running if _job(s).work_class == job.work_class]
    held = Counter(_job(s).caller for s in same)
    most = max(held.values(), default=0)
    if most < held.get(job.caller, 0) + 2:
        return None
    return max((s for s in same if held[_job(s).caller] == most), key=lambda s: s.admitted)

"""Which running sequences a step decodes, and which one to preempt for a waiting request.

Classes first: while an interactive request runs, tasks' and batch lines' sequences keep their slots but wait
(a step holds only the most urgent class present). Within a class, callers share each step evenly: every caller
gets as many sequences in the step as the caller with the fewest has, and a caller's own sequences take turns.
On a CPU a step's time grows with the sequences in it, so this is what keeps one caller's short chat quick while
another caller keeps many long streams going; a caller alone still gets every slot decoded together.
"""

from __future__ import annotations

from collections import Counter

from sop_llm.providers.local.batching.slots import Job, Slot


def _job(slot: Slot) -> Job:
    assert slot.job is not None
    return slot.job


def step_members(running: list[Slot]) -> list[Slot]:
    """The sequences the next step decodes (or feeds a prompt chunk of)."""
    if not running:
        return []
    top = min(_job(s).work_class for s in running)
    groups: dict[str, list[Slot]] = {}
    for slot in running:
        if _job(slot).work_class == top:
            groups.setdefault(_job(slot).caller, []).append(slot)
    share = min(len(group) for group in groups.values())
    chosen: list[Slot] = []
    for group in groups.values():
        group.sort(key=lambda s: (s.last_step, s.admitted))
        chosen.extend(group[:share])
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

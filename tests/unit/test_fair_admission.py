"""The batched scheduler's admission order and step sharing, on their own: classes first, callers in turn, and
preemption only for a more urgent class or a caller two or more slots short of another."""

from __future__ import annotations

from collections import Counter

import pytest

from sop_llm.providers.local.batching.policy import preemption_victim, step_members
from sop_llm.providers.local.batching.sampling import SamplingParams
from sop_llm.providers.local.batching.slots import Job, Slot
from sop_llm.providers.local.batching.waiting import WaitingJobs
from sop_llm.providers.types import WorkClass

pytestmark = pytest.mark.unit

INTERACTIVE, TASK, BATCH = WorkClass.INTERACTIVE, WorkClass.TASK, WorkClass.BATCH


def job(caller: str, work_class: int = INTERACTIVE, name: str = "") -> Job:
    made = Job([1, 2, 3], 8, [], SamplingParams(), False, None, lambda _: None, caller=caller, work_class=work_class)
    made.stop = [name or caller]  # a label to tell jobs apart in assertions
    return made


def running(*jobs: Job) -> list[Slot]:
    slots = []
    for i, j in enumerate(jobs):
        slot = Slot(i)
        slot.job, slot.admitted = j, i
        slots.append(slot)
    return slots


def drain(waiting: WaitingJobs, held: Counter[str], per_caller: int = 0) -> list[str]:
    order = []
    while (next_job := waiting.peek(held, per_caller)) is not None:
        waiting.take(next_job)
        held[next_job.caller] += 1
        order.append(next_job.stop[0])
    return order


def test_callers_take_turns_and_keep_their_own_order() -> None:
    waiting = WaitingJobs()
    for name in ("a1", "a2", "a3", "a4"):
        waiting.push(job("a", name=name))
    waiting.push(job("b", name="b1"))
    waiting.push(job("b", name="b2"))
    waiting.push(job("c", name="c1"))
    # a already holds two slots: b and c come first, then whoever holds fewest.
    assert drain(waiting, Counter({"a": 2})) == ["b1", "c1", "b2", "a1", "a2", "a3", "a4"]


def test_classes_go_first_whatever_the_callers_hold() -> None:
    waiting = WaitingJobs()
    waiting.push(job("batch-owner", BATCH, "line"))
    waiting.push(job("tasks-owner", TASK, "task"))
    waiting.push(job("a", INTERACTIVE, "chat"))
    assert drain(waiting, Counter({"a": 5})) == ["chat", "task", "line"]


def test_a_preempted_request_resumes_before_its_callers_newer_ones() -> None:
    waiting = WaitingJobs()
    waiting.push(job("a", name="new"))
    waiting.push(job("a", name="preempted"), front=True)
    assert drain(waiting, Counter()) == ["preempted", "new"]


def test_per_caller_limit_holds_a_caller_back() -> None:
    waiting = WaitingJobs()
    for name in ("a1", "a2", "a3"):
        waiting.push(job("a", name=name))
    assert drain(waiting, Counter(), per_caller=2) == ["a1", "a2"]
    assert len(waiting) == 1


def test_a_step_shares_sequences_evenly_between_callers_of_the_most_urgent_class() -> None:
    slots = running(*(job("a") for _ in range(6)), job("b"), job("t", TASK))
    first = step_members(slots)
    assert Counter(s.job.caller for s in first if s.job) == {"a": 1, "b": 1}  # the task waits
    # a's sequences take turns from step to step.
    seen = set()
    for step in range(1, 7):
        for slot in step_members(slots):
            slot.last_step = step
            if slot.job and slot.job.caller == "a":
                seen.add(slot.seq_id)
    assert seen == set(range(6))
    alone = running(*(job("a") for _ in range(8)))
    assert len(step_members(alone)) == 8  # a caller alone gets every slot decoded together


def test_preemption_takes_the_lowest_class_first_then_the_caller_with_most_slots() -> None:
    slots = running(job("a"), job("t", TASK), job("l", BATCH), job("l", BATCH))
    victim = preemption_victim(slots, job("b"))
    assert victim is slots[3]  # a batch line, the latest admitted
    crowded = running(job("a"), job("a"), job("a"), job("b"))
    assert preemption_victim(crowded, job("c")) is crowded[2]  # a holds 3, c none
    assert preemption_victim(crowded, job("b")) is crowded[2]  # a holds 3, b 1
    even = running(job("a"), job("a"), job("b"))
    assert preemption_victim(even, job("b")) is None  # a holds only one more than b: b waits
    assert preemption_victim(running(job("a", TASK)), job("b", BATCH)) is None  # never for a lower class

"""The batched scheduler's admission order and step sharing, on their own: classes first, callers in turn, the same
tokens for every busy caller, and preemption only for a more urgent class or a caller two or more slots short of
another."""

from __future__ import annotations

from collections import Counter

import pytest

from sop_llm.providers.local.batching.policy import CREDIT, SLACK, FairSteps, preemption_victim
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


def test_steps_give_callers_the_same_tokens_and_a_returning_caller_runs_at_once() -> None:
    fair = FairSteps()
    a_only = running(*(job("a") for _ in range(6)))
    for _ in range(20):
        assert len(fair.members(a_only)) == 6  # a caller alone gets every slot decoded together
    slots = [*a_only, *running(job("b"), job("t", TASK))]
    slots[6].seq_id, slots[7].seq_id = 6, 7
    tokens: Counter[str] = Counter()
    first_steps = []
    for step in range(300):
        members = fair.members(slots)
        assert all(s.job is not None and s.job.caller != "t" for s in members)  # the task waits
        if step < CREDIT - SLACK:
            first_steps.append({s.job.caller for s in members if s.job})
        tokens.update(s.job.caller for s in members if s.job)
    assert all(callers == {"b"} for callers in first_steps)  # b arrived: it runs alone first
    # Then both get the same tokens, a's six sequences sharing a's.
    assert abs(tokens["a"] - tokens["b"]) <= CREDIT + SLACK + 6, tokens


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

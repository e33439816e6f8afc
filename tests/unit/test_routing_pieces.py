"""Circuit breaker state machine and the local tool-call parser, on their own."""

from __future__ import annotations

import json

import pytest

from sop_llm.infra.errors import BadRequestError
from sop_llm.providers.local.tools import parse_tool_call, plain_history, plan_tools
from sop_llm.providers.types import ChatMessage
from sop_llm.services.routing.circuit_breaker import CircuitBreaker, CircuitState

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=clock)
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()
    clock.now = 10
    assert breaker.allow()  # the one half-open probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow()  # no second probe while the first is out
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()
    assert breaker.times_opened == 1


def test_breaker_probe_failure_reopens_and_abandoned_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now = 5
    assert breaker.allow()
    breaker.abandon()  # the caller went away: another probe may go
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_in() == 5
    assert breaker.describe()["state"] == "open"


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def test_parse_tool_call() -> None:
    names = frozenset({"f"})
    (call,) = parse_tool_call('```json\n{"name": "f", "arguments": {"x": 1}}\n```', names) or []
    assert call["function"] == {"name": "f", "arguments": json.dumps({"x": 1})}
    assert parse_tool_call('{"name": "g", "arguments": {}}', names) is None
    assert parse_tool_call("just text", names) is None
    assert parse_tool_call("{broken", names) is None


def test_plan_tools_forces_the_named_call() -> None:
    plan = plan_tools([ChatMessage("user", "hi")], TOOLS, {"type": "function", "function": {"name": "f"}})
    assert plan.forced_schema is not None
    assert plan.forced_schema["properties"]["name"] == {"const": "f"}
    assert plan.messages[0].role == "system"
    assert plan_tools([ChatMessage("user", "hi")], TOOLS, "auto").forced_schema is None
    with pytest.raises(BadRequestError):
        plan_tools([], TOOLS, "sometimes")


def test_plain_history_turns_tool_messages_into_text() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    history = plain_history(
        [ChatMessage("assistant", None, tool_calls=[call]), ChatMessage("tool", "42", tool_call_id="c")]
    )
    assert history[0] == ChatMessage("assistant", '{"name": "f", "arguments": {"x": 1}}')
    assert history[1] == ChatMessage("user", "Tool result (c): 42")

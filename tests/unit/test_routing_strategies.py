"""The routing strategies' choices on fixed scenarios, the hash ring's spread, and a deployment's own limits
counted in this process."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from sop_llm.providers.types import ChatMessage, GenerationRequest
from sop_llm.services.routing.load import NodeLoad
from sop_llm.services.routing.node_limits import Limits, LocalCounts
from sop_llm.services.routing.strategies import (
    Latency,
    LeastOutstanding,
    PrefixAffinity,
    Weighted,
    make_strategy,
    prefix_key,
)

pytestmark = pytest.mark.unit


@dataclass
class Node:
    name: str
    weight: float = 1.0
    load: NodeLoad = field(default_factory=NodeLoad)


def busy(name: str, in_flight: int, weight: float = 1.0) -> Node:
    return Node(name, weight, NodeLoad(in_flight=in_flight))


def chat(first_user: str, *more: str) -> GenerationRequest:
    messages = [ChatMessage("system", "You are terse."), ChatMessage("user", first_user)]
    for index, text in enumerate(more):
        messages.append(ChatMessage("assistant" if index % 2 == 0 else "user", text))
    return GenerationRequest(messages=messages, max_tokens=16)


REQUEST = GenerationRequest(prompt="hello", max_tokens=16)


def names(nodes: list[Node]) -> list[str]:
    return [node.name for node in nodes]


def test_least_outstanding_takes_the_node_with_fewest_requests_in_flight() -> None:
    nodes = [busy("a", 3), busy("b", 1), busy("c", 2)]
    assert names(LeastOutstanding().order(nodes, REQUEST)) == ["b", "c", "a"]


def test_least_outstanding_breaks_ties_by_weight_then_in_turn() -> None:
    strategy = LeastOutstanding()
    heavy = [busy("a", 1), busy("b", 1, weight=2), busy("c", 1)]
    assert strategy.order(heavy, REQUEST)[0].name == "b"
    even = [busy("a", 0), busy("b", 0), busy("c", 0)]
    firsts = [strategy.order(even, REQUEST)[0].name for _ in range(6)]
    assert Counter(firsts) == {"a": 2, "b": 2, "c": 2}


def test_latency_weighs_expected_time_by_requests_in_flight() -> None:
    fast = Node("fast", load=NodeLoad(in_flight=2, per_token_s=0.01))
    slow = Node("slow", load=NodeLoad(in_flight=0, per_token_s=0.02))
    # fast: 0.16 s x 3 = 0.48; slow: 0.32 s x 1 = 0.32
    assert names(Latency().order([fast, slow], REQUEST)) == ["slow", "fast"]
    fast.load.in_flight = 0
    assert names(Latency().order([fast, slow], REQUEST)) == ["fast", "slow"]


def test_latency_counts_an_unmeasured_node_as_an_average_one() -> None:
    measured = [Node("a", load=NodeLoad(in_flight=1, per_token_s=0.01)), Node("b", load=NodeLoad(per_token_s=0.03))]
    new = Node("new", load=NodeLoad(in_flight=3))
    ranked = Latency().order([*measured, new], REQUEST)
    # a: 0.16 x 2 = 0.32; b: 0.48 x 1; new: the average, 0.32 x 4 = 1.28
    assert names(ranked) == ["a", "b", "new"]


def test_weighted_round_robin_is_smooth() -> None:
    strategy = Weighted()
    nodes = [Node("a", 5), Node("b", 1), Node("c", 1)]
    picks = "".join(strategy.order(nodes, REQUEST)[0].name for _ in range(7))
    assert picks == "aabacaa"  # nginx's smooth weighted round robin for 5:1:1


def test_equal_weights_are_plain_round_robin() -> None:
    strategy = make_strategy("weighted")
    nodes = [Node("a"), Node("b"), Node("c")]
    assert [strategy.order(nodes, REQUEST)[0].name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_prefix_affinity_sends_every_turn_of_a_conversation_to_one_node() -> None:
    strategy = PrefixAffinity()
    nodes = [Node("a"), Node("b"), Node("c")]
    for index in range(30):
        first = strategy.order(nodes, chat(f"question {index}"))[0]
        second = strategy.order(nodes, chat(f"question {index}", "an answer", "a follow-up"))[0]
        assert second is first


def test_prefix_affinity_spreads_conversations_by_weight() -> None:
    strategy = PrefixAffinity()
    nodes = [Node("a"), Node("b"), Node("c", weight=2)]
    counts = Counter(strategy.order(nodes, chat(f"conversation {i}"))[0].name for i in range(4000))
    assert 800 <= counts["a"] <= 1200 and 800 <= counts["b"] <= 1200
    assert 1700 <= counts["c"] <= 2300


def test_prefix_affinity_hands_over_from_a_node_loaded_above_its_bound() -> None:
    strategy = PrefixAffinity()
    nodes = [Node("a"), Node("b")]
    request = chat("the same conversation")
    home = strategy.order(nodes, request)[0]
    other = next(node for node in nodes if node is not home)
    # A node takes the request while its requests in flight, with this one, stay within
    # max(ceil(1.25 x share), ceil(share) + 2), where share = half of all requests in flight, this one included.
    home.load.in_flight = 3  # 4 in all: share 2, bound max(3, 4) = 4; the home node would hold 4: it stays
    assert strategy.order(nodes, request)[0] is home
    home.load.in_flight = 4  # 5 in all: share 2.5, bound max(4, 5) = 5; it would hold 5: it stays
    assert strategy.order(nodes, request)[0] is home
    home.load.in_flight = 6  # 7 in all: share 3.5, bound max(5, 6) = 6; it would hold 7: handed over
    assert strategy.order(nodes, request)[0] is other
    home.load.in_flight, other.load.in_flight = 40, 20  # 61 in all: share 30.5, bound max(39, 33) = 39 < 41
    assert strategy.order(nodes, request)[0] is other


def test_a_conversation_is_known_by_its_messages_up_to_the_first_user_message() -> None:
    assert prefix_key(chat("hi")) == prefix_key(chat("hi", "hello", "more"))
    assert prefix_key(chat("hi")) != prefix_key(chat("ho"))
    long_prompt = GenerationRequest(prompt="x" * 600 + "a")
    assert prefix_key(long_prompt) == prefix_key(GenerationRequest(prompt="x" * 600 + "b"))


def test_node_moving_averages_follow_the_answers() -> None:
    load = NodeLoad()
    assert load.expected_seconds(10) == 0
    load.observe(1.0, completion_tokens=11, first_token_s=0.5)  # 0.5 s to the first token, 0.05 s per token after
    assert load.first_token_s == pytest.approx(0.5)
    assert load.per_token_s == pytest.approx(0.05)
    load.observe(2.0, completion_tokens=10, first_token_s=None)  # not streamed: 0.2 s per token
    assert load.per_token_s == pytest.approx(0.05 + 0.2 * (0.2 - 0.05))


def test_local_counts_keep_max_parallel_rpm_and_tpm() -> None:
    parallel = LocalCounts(Limits(max_parallel=2))
    assert parallel.acquire("1") is None and parallel.acquire("2") is None
    assert parallel.acquire("3") == "max_parallel"
    parallel.release("1", 0)
    assert parallel.acquire("3") is None

    per_minute = LocalCounts(Limits(rpm=3))
    assert [per_minute.acquire(str(i)) for i in range(4)] == [None, None, None, "rpm"]

    tokens = LocalCounts(Limits(tpm=20))
    admitted = 0
    while tokens.acquire(str(admitted)) is None:
        tokens.release(str(admitted), 7)
        admitted += 1
    assert admitted == 3  # 0, 7 and 14 tokens used when asked; 21 is over

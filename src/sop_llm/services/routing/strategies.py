"""How a request picks one of a model's deployments. Each strategy ranks the deployments for one request: the
router calls the first that admits it and moves down the list when a node fails or is at its limits.

- `least_outstanding` (default): fewest requests in flight from this replica, ties by weight, then in turn.
- `latency`: the node expected to answer first — its moving-average answer time times its requests in flight plus
  one ("peak EWMA", as in Finagle and Linkerd): a slow or busy node gets less, and recovers as its figures do.
- `weighted`: smooth weighted round robin (nginx's): node i gets weight_i / Σweight of the requests, evenly spread;
  equal weights make it plain round robin.
- `prefix_affinity`: a conversation's opening (system and first user message, or a prompt's first characters)
  hashes onto a ring of the nodes, so every turn of a chat goes to the node that holds its prefix in KV cache;
  a node loaded above 1.25x its share of the requests in flight (and by more than two) hands over to the next node
  on the ring ("consistent hashing with bounded loads", Mirrokni et al. 2018).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

from sop_llm.providers.types import GenerationRequest
from sop_llm.services.routing.load import NodeLoad

STRATEGIES = ("least_outstanding", "latency", "weighted", "prefix_affinity")
# prefix_affinity: a node takes more than its share of the requests in flight by this factor, and by more than
# AFFINITY_SLACK requests, before it hands a conversation over to the next node on the ring.
AFFINITY_BOUND = 1.25
AFFINITY_SLACK = 2
VIRTUAL_NODES = 160  # points per unit of weight on the ring: shares within a few percent of the weights
PROMPT_KEY_CHARS = 512  # a raw prompt's opening that identifies its conversation


class Node(Protocol):
    name: str
    weight: float
    load: NodeLoad


N = TypeVar("N", bound=Node)


class Strategy(Protocol):
    def order(self, nodes: Sequence[N], request: GenerationRequest) -> list[N]: ...


class LeastOutstanding:
    def __init__(self) -> None:
        self._turn = 0

    def order(self, nodes: Sequence[N], request: GenerationRequest) -> list[N]:
        return sorted(_in_turn(self, nodes), key=lambda node: (node.load.in_flight, -node.weight))


class Latency:
    def __init__(self) -> None:
        self._turn = 0

    def order(self, nodes: Sequence[N], request: GenerationRequest) -> list[N]:
        expected = {node.name: node.load.expected_seconds(request.max_tokens) for node in nodes}
        measured = [seconds for seconds in expected.values() if seconds > 0]
        unmeasured = sum(measured) / len(measured) if measured else 1.0  # a new node counts as an average one

        def cost(node: N) -> tuple[float, int, float]:
            seconds = expected[node.name] or unmeasured
            return seconds * (node.load.in_flight + 1), node.load.in_flight, -node.weight

        return sorted(_in_turn(self, nodes), key=cost)


class Weighted:
    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def order(self, nodes: Sequence[N], request: GenerationRequest) -> list[N]:
        total = sum(node.weight for node in nodes)
        for node in nodes:
            self._current[node.name] = self._current.get(node.name, 0.0) + node.weight
        ranked = sorted(nodes, key=lambda node: -self._current[node.name])
        self._current[ranked[0].name] -= total
        return ranked


class PrefixAffinity:
    def __init__(self) -> None:
        self._ring: list[int] = []
        self._owners: list[str] = []
        self._built_for: tuple[tuple[str, float], ...] = ()
        self._fallback = LeastOutstanding()

    def order(self, nodes: Sequence[N], request: GenerationRequest) -> list[N]:
        key = prefix_key(request)
        if key is None:
            return self._fallback.order(nodes, request)
        by_name = {node.name: node for node in nodes}
        walk = [by_name[name] for name in self._walk(nodes, _hash(key))]
        in_flight = sum(node.load.in_flight for node in nodes) + 1  # with this request
        total_weight = sum(node.weight for node in nodes)

        def within_bound(node: N) -> bool:
            share = in_flight * node.weight / total_weight
            return node.load.in_flight + 1 <= max(math.ceil(AFFINITY_BOUND * share), math.ceil(share) + AFFINITY_SLACK)

        return [node for node in walk if within_bound(node)] + [node for node in walk if not within_bound(node)]

    def _walk(self, nodes: Sequence[Node], point: int) -> list[str]:
        """The nodes' names in ring order from `point`, each once."""
        members = tuple((node.name, node.weight) for node in nodes)
        if members != self._built_for:
            self._build(members)
        start = bisect.bisect(self._ring, point)
        seen: dict[str, None] = {}
        for index in range(start, start + len(self._ring)):
            seen.setdefault(self._owners[index % len(self._ring)])
            if len(seen) == len(members):
                break
        return list(seen)

    def _build(self, members: tuple[tuple[str, float], ...]) -> None:
        points = sorted(
            (_hash(f"{name}#{index}"), name)
            for name, weight in members
            for index in range(max(1, round(VIRTUAL_NODES * weight)))
        )
        self._ring = [point for point, _ in points]
        self._owners = [name for _, name in points]
        self._built_for = members


def make_strategy(name: str) -> Strategy:
    strategies: dict[str, type[LeastOutstanding | Latency | Weighted | PrefixAffinity]] = {
        "least_outstanding": LeastOutstanding,
        "latency": Latency,
        "weighted": Weighted,
        "prefix_affinity": PrefixAffinity,
    }
    return strategies[name]()


def prefix_key(request: GenerationRequest) -> str | None:
    """What identifies a conversation from its first turn on: its messages up to the first user message (the
    system prompt alone is shared by many), or the opening of a raw prompt."""
    if request.messages is not None:
        opening = []
        for message in request.messages:
            opening.append([message.role, message.content])
            if message.role == "user":
                break
        return json.dumps(opening) if opening else None
    return request.prompt[:PROMPT_KEY_CHARS] if request.prompt else None


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _in_turn(strategy: LeastOutstanding | Latency, nodes: Sequence[N]) -> list[N]:
    """The nodes rotated by one more place at each call, so that ties do not always go to the first listed."""
    strategy._turn = (strategy._turn + 1) % len(nodes)
    return [*nodes[strategy._turn :], *nodes[: strategy._turn]]

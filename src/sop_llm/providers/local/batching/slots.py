"""A sequence slot of the batched context, the request it is serving, and the stop-string filter of its text.

A slot owns one llama.cpp sequence id. `cached` lists the tokens whose KV cells the sequence holds: after a request
finishes they stay, so the next request whose prompt starts the same way (the next turn of a chat) evaluates only
the rest. A cancelled request's cells are removed at once.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sop_llm.providers.local.batching.sampling import Sampler, SamplingParams
from sop_llm.providers.types import Chunk, Constraint, TokenLogprob

Emit = Callable[[Chunk | BaseException | None], None]


@dataclass(eq=False)
class Job:
    """One request as the decode thread sees it. `emit` is thread-safe: a Chunk, an exception, or None once the
    request has left its slot (its KV cells and sampler are released)."""

    prompt: list[int]
    max_tokens: int
    stop: list[str]
    sampling: SamplingParams
    per_token: bool
    constraint: Constraint | None
    emit: Emit
    logprobs: int | None = None  # report log probabilities with this many alternatives (None: none)
    caller: str = ""
    work_class: int = 0  # WorkClass: lower goes first
    cancel: threading.Event = field(default_factory=threading.Event)
    queued_at: float = 0.0  # monotonic seconds when it started waiting for a slot (the first time)
    parked: Parked | None = None  # set while preempted: where it was, to carry on from
    cached_tokens: int = 0  # prompt tokens found in the slot's KV cache when it was first admitted


class StopText:
    """The generated text, released only once it cannot be the start of a stop string; cut at the first stop."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")("ignore")
        self.text = ""
        self._sent = 0

    def feed(self, piece: bytes) -> tuple[str, bool]:
        """The text that can be sent now, and whether a stop string ended the answer."""
        self.text += self._decoder.decode(piece)
        hits = [i for i in (self.text.find(s, self._sent) for s in self._stops) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            return self.flush(), True
        held = max((_overlap(self.text, s) for s in self._stops), default=0)
        safe = len(self.text) - held
        out = self.text[self._sent : safe] if safe > self._sent else ""
        self._sent = max(self._sent, safe)
        return out, False

    def flush(self) -> str:
        out = self.text[self._sent :]
        self._sent = len(self.text)
        return out


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of `text` that is a proper start of `stop`."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


@dataclass(eq=False)
class Parked:
    """A preempted request's progress: its sampler (with its random state and grammar position), what it has
    written, the tokens its KV cells held and, when there was room to keep them, those cells' contents."""

    sampler: Sampler
    feed: list[int]
    next_token: int | None
    generated: int
    text: StopText
    logprobs: list[TokenLogprob]
    tokens: list[int]
    kv: bytes | None = None


class Slot:
    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.cached: list[int] = []
        self.last_used = 0
        self.job: Job | None = None
        self.sampler: Sampler | None = None
        self.feed: list[int] = []  # tokens to get into the KV cache before the next draw (the prompt, at first)
        self.fed = 0  # of `feed`, already in the KV cache
        self.next_token: int | None = None  # sampled, to be decoded at the next step
        self.generated = 0
        self.text = StopText([])
        self.logprobs: list[TokenLogprob] = []  # of tokens not yet sent (streams) or of all tokens (otherwise)
        self.admitted = 0  # scheduler clock when the request took this slot

    @property
    def prefilling(self) -> bool:
        return self.job is not None and self.fed < len(self.feed)

    def take_logprobs(self) -> list[TokenLogprob] | None:
        """The log probabilities gathered since the last call, for the chunk being sent (None when not asked)."""
        if self.job is None or self.job.logprobs is None:
            return None
        taken, self.logprobs = self.logprobs, []
        return taken

    def start(self, job: Job, sampler: Sampler, feed: list[int], reused: int) -> None:
        """Serve `job` from here: its first `reused` tokens of `feed` are already in the KV cache."""
        self.job = job
        self.sampler = sampler
        del self.cached[reused:]
        self.feed = feed
        self.fed = reused
        self.next_token = None
        self.generated = 0
        self.text = StopText(job.stop)
        self.logprobs = []

    def resume(self, parked: Parked) -> None:
        """Carry on where the request was preempted (after `start`)."""
        self.generated = parked.generated
        self.text = parked.text
        self.logprobs = parked.logprobs

    def park(self, kv: bytes | None) -> Parked:
        """The progress of this slot's request, to resume it elsewhere later; the slot is left without it."""
        if self.prefilling:
            feed, next_token = self.feed, None
        else:  # resumed by evaluating the cached tokens and the one drawn last, whose logits give the next draw
            assert self.next_token is not None
            feed, next_token = [*self.cached, self.next_token], self.next_token
        assert self.sampler is not None
        parked = Parked(self.sampler, feed, next_token, self.generated, self.text, self.logprobs, list(self.cached), kv)
        self.sampler = None
        return parked


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

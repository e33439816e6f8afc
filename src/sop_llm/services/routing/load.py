"""What the router knows of a deployment's load: requests in flight, and moving averages of its time to first token
and time per output token, as this replica measured them (queueing at the node included)."""

from __future__ import annotations

from dataclasses import dataclass

# Weight of the newest sample in the moving averages: ~10 samples make up most of the figure.
SMOOTHING = 0.2


@dataclass
class NodeLoad:
    in_flight: int = 0
    served: int = 0
    first_token_s: float | None = None  # moving average, streamed answers
    per_token_s: float | None = None  # moving average
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens the node said it took from its prefix cache

    def expected_seconds(self, max_tokens: int) -> float:
        """How long this node is expected to take for an answer of up to `max_tokens` tokens; 0 before any sample
        (an unmeasured node is tried early)."""
        return (self.first_token_s or 0.0) + (self.per_token_s or 0.0) * max_tokens

    def observe(self, seconds: float, completion_tokens: int, first_token_s: float | None) -> None:
        """One finished answer: `seconds` from the call to its end, the time to its first token when streamed."""
        if first_token_s is not None:
            self.first_token_s = _smoothed(self.first_token_s, first_token_s)
            decode = max(0.0, seconds - first_token_s)
            if completion_tokens > 1:
                self.per_token_s = _smoothed(self.per_token_s, decode / (completion_tokens - 1))
        elif completion_tokens > 0:
            # Without a first-token time the whole answer is spread over its tokens: the prefill is then part of
            # the per-token figure, which is fair to every node measured the same way.
            self.per_token_s = _smoothed(self.per_token_s, seconds / completion_tokens)

    def describe(self) -> dict[str, object]:
        return {
            "in_flight": self.in_flight,
            "served": self.served,
            "first_token_ms": _ms(self.first_token_s),
            "per_token_ms": _ms(self.per_token_s),
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
        }


def _smoothed(average: float | None, sample: float) -> float:
    return sample if average is None else average + SMOOTHING * (sample - average)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)

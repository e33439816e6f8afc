"""Times as Ollama writes them: RFC 3339 in UTC with up to nine fractional digits (Go's `time.Time` in JSON), and
durations in nanoseconds."""

from __future__ import annotations

import time

NS_PER_S = 1_000_000_000


def rfc3339(epoch_ns: int) -> str:
    seconds, fraction = divmod(epoch_ns, NS_PER_S)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def now() -> str:
    return rfc3339(time.time_ns())


def of_epoch(seconds: float) -> str:
    return rfc3339(round(seconds * NS_PER_S))

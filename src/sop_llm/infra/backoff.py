"""Leave a failing dependency alone for a while: after a failure, `available` is False for `seconds`, so a Redis
or broker that does not answer costs one timeout per period instead of one per request."""

from __future__ import annotations

import time

from loguru import logger

# How long Redis (cache, rate limits, circuit sharing) or the broker is left alone after a failure.
RETRY_SECONDS = 5.0


class Backoff:
    def __init__(self, what: str, seconds: float = RETRY_SECONDS) -> None:
        self._what = what
        self._seconds = seconds
        self._until = 0.0
        self.failures = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._until

    def failed(self, exc: BaseException, consequence: str) -> None:
        self.failures += 1
        self._until = time.monotonic() + self._seconds
        logger.warning("{} unreachable ({!r}); {} for {} s", self._what, exc, consequence, self._seconds)

"""A circuit breaker per deployment: open after N consecutive failures, one half-open probe after a
cool-down, closed again on success. Each replica keeps its own; with REDIS_URL, circuit_share.py tells every
replica when one of them opened a breaker."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    failure_threshold: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    times_opened: int = 0
    opened_elsewhere: int = 0
    _probe_in_flight: bool = field(default=False, repr=False)

    def allow(self) -> bool:
        """May a call go to this deployment now? In half-open state only one probe is let through."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            if self.clock() - self.opened_at < self.cooldown_s:
                return False
            self.state = CircuitState.HALF_OPEN
            self._probe_in_flight = False
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.state is CircuitState.HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            if self.state is not CircuitState.OPEN:
                self.times_opened += 1
            self.state = CircuitState.OPEN
            self.opened_at = self.clock()
            self._probe_in_flight = False

    def open_for(self, seconds: float) -> None:
        """Another replica opened this deployment's breaker: stay open for what is left of its cool-down."""
        if self.state is CircuitState.CLOSED:
            self.opened_elsewhere += 1
            self.state = CircuitState.OPEN
            self.opened_at = self.clock() - max(0.0, self.cooldown_s - seconds)
            self._probe_in_flight = False

    def abandon(self) -> None:
        """The call was cancelled before it said anything about the deployment: free the probe slot."""
        self._probe_in_flight = False

    def retry_in(self) -> float:
        return max(0.0, self.cooldown_s - (self.clock() - self.opened_at))

    def describe(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "times_opened": self.times_opened,
            "opened_elsewhere": self.opened_elsewhere,
            "retry_in_seconds": round(self.retry_in(), 1) if self.state is CircuitState.OPEN else 0,
        }

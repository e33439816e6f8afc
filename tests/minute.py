"""Per-minute limits count by clock minute (tpm) or over the last 60 s (rpm): a test of exact counts starts where
it cannot straddle the turn of a minute."""

from __future__ import annotations

import time


def clear_of_the_minute_turn(seconds: float = 15) -> None:
    """Wait, when needed, until the next `seconds` lie within one clock minute."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.1)

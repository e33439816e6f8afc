"""Budget periods in UTC: a day and a calendar month, each with the moment it resets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Period = Literal["day", "month"]


@dataclass(frozen=True)
class Window:
    period: Period
    label: str  # 2026-11-29 or 2026-11
    resets_at: datetime

    def seconds_left(self, now: datetime) -> float:
        return max(1.0, (self.resets_at - now).total_seconds())


def window(period: Period, now: datetime | None = None) -> Window:
    now = now or datetime.now(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window("day", start.date().isoformat(), start + timedelta(days=1))
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return Window("month", start.strftime("%Y-%m"), following)

"""Durations and amounts of memory as people write them in settings, config files and requests."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_BYTES = re.compile(r"(\d+(?:\.\d*)?)\s*([kmgt]i?b?|b)?", re.IGNORECASE)


def parse_duration(value: str | float) -> float:
    """Seconds from a number of seconds or a duration like "5m", "1h30m", "90s", "500ms" (Ollama's keep_alive
    forms). A negative value means forever: `math.inf`. Raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 5m, 1h30m, 90s")
    if isinstance(value, int | float):
        return math.inf if value < 0 else float(value)
    text = value.strip()
    negative = text.startswith("-")
    body = text.lstrip("+-")
    try:
        seconds = float(body)
    except ValueError:
        parts = _DURATION_PART.findall(body)
        if not body or "".join(n + u for n, u in parts) != body:
            raise ValueError(
                f"'{value}' is not a duration: give seconds (300) or a duration like 5m, 1h30m, 90s, 500ms; "
                "a negative one keeps forever"
            ) from None
        seconds = sum(float(n) * _SECONDS[u] for n, u in parts)
    return math.inf if negative and seconds > 0 else seconds


def parse_memory(value: str | int, total: int) -> int:
    """Bytes from a number of bytes, a size ("12GB", "512MiB", "8g"), a percentage ("75%") or a share of `total`
    (a number up to 1, e.g. 0.5). Raises ValueError with the accepted forms."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    problem = (
        f"'{value}' is not an amount of memory: give bytes (8000000000), a size (12GB, 512MiB), a percentage "
        "of the machine's memory (75%) or a share of it (0.75)"
    )
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise ValueError(problem) from None
        if not 0 < percent <= 100:
            raise ValueError(problem)
        return int(total * percent / 100)
    match = _BYTES.fullmatch(text)
    if match is None:
        raise ValueError(problem)
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    if not unit and number <= 1:
        if number <= 0:
            raise ValueError(problem)
        return int(total * number)
    base = 1024 if "i" in unit else 1000
    power = "bkmgt".index(unit[0]) if unit else 0
    return int(number * base**power)

"""Refuse to load or generate when system memory is nearly exhausted."""

from __future__ import annotations

import psutil

from sop_llm.infra.errors import MemoryExceededError


def memory_percent() -> float:
    return float(psutil.virtual_memory().percent)


def check_memory(threshold_percent: float) -> None:
    used = memory_percent()
    if used > threshold_percent:
        raise MemoryExceededError(
            f"system memory use is {used:.1f} %, above LLM_MEMORY_THRESHOLD={threshold_percent:g} %; "
            "retry later, unload a model, or raise the threshold",
            details={"memory_percent": round(used, 1), "threshold_percent": threshold_percent},
            retry_after=5,
        )

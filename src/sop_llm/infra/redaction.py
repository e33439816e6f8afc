"""Redaction of secrets and personal data in text that leaves the request path: logged bodies and span content.

The patterns come from one setting (`REQUEST_LOG_REDACT`), so the request log and the traces hide the same things.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"


class Redactor:
    """Replaces every match of any of the given regular expressions with `[REDACTED]`.

    Each pattern is compiled on its own, so one may carry global flags such as `(?i)`; they apply in the order given.
    A faulty pattern raises `re.error` here, when the redactor is built, not on the first request.
    With no patterns, `redact` returns its argument unchanged.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = tuple(re.compile(p) for p in patterns if p)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def redact(self, text: str) -> str:
        for pattern in self._patterns:
            text = pattern.sub(REDACTED, text)
        return text

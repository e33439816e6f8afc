"""The record of one request (or one background task run): whose it is, the model it reached, the tokens it used
and whether it failed. It is opened once where the request enters — the HTTP middleware, the task runner — and
filled in by the code that runs the model (accounting.py); when the request ends, whoever opened it hands it to
the usage tally and the token rate limit. One record per request, so every consumer sees the same figures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestRecord:
    subject: str | None  # whose budgets and usage: the key or token subject; None for an anonymous caller
    model: str | None = None  # the model that answered (or was asked, when it failed)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: bool = False  # failed after its answer started (an error inside a stream)
    error_code: str | None = None  # the error's code when the answer was an error (or a stream ended in one)
    first_token: float | None = None  # time.perf_counter() when the first streamed chunk went out

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_current: ContextVar[RequestRecord | None] = ContextVar("request_record", default=None)


@contextmanager
def opened(subject: str | None) -> Iterator[RequestRecord]:
    """The record of the request that runs inside this block."""
    record = RequestRecord(subject)
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)


def current() -> RequestRecord:
    """The record of the request being served; outside any (a script, a test), a new one nobody reads, owned by
    no caller — so no budget applies to it."""
    record = _current.get()
    return record if record is not None else RequestRecord(None)


def note_failure(model: str | None = None) -> None:
    """The request failed after its answer started (an error event inside a stream)."""
    record = current()
    record.failed = True
    if model is not None and record.model is None:
        record.model = model


def note_error(code: str) -> None:
    """The request was answered with an error of this code (`budget_exceeded`, `model_not_found`, …)."""
    current().error_code = code


def note_first_token() -> None:
    """The first chunk of a streamed answer is going out (only the first call counts)."""
    record = current()
    if record.first_token is None:
        record.first_token = time.perf_counter()


def note_tokens(prompt_tokens: int, completion_tokens: int) -> None:
    """Tokens the request used that no model reported (an answer cut short here: estimated)."""
    record = current()
    record.prompt_tokens += prompt_tokens
    record.completion_tokens += completion_tokens

"""Work that nobody is waiting on interactively (a batch's lines) runs with `background` set; shared resources
that queue work (the embedding micro-batcher) serve everyone else's first. A context variable, so it reaches every
task the background work starts."""

from __future__ import annotations

from contextvars import ContextVar

background: ContextVar[bool] = ContextVar("background", default=False)

"""Who is asking for work and how urgently, carried in context variables so they reach every task the work starts.

`work_class` is set by whoever runs non-interactive work (the task runner, a batch's chunks); `caller` by the API
for the request being served (the key, token subject or client IP) and by the task runner for a task's owner. Shared
resources read them: the local engine admits callers in turn and interactive work first, the embedding
micro-batcher serves interactive texts first.
"""

from __future__ import annotations

from contextvars import ContextVar

from sop_llm.providers.types import GenerationRequest, WorkClass

work_class: ContextVar[WorkClass] = ContextVar("work_class", default=WorkClass.INTERACTIVE)
caller: ContextVar[str | None] = ContextVar("caller", default=None)


def in_background() -> bool:
    """Nobody is waiting on this work interactively (a task, a batch's line)."""
    return work_class.get() != WorkClass.INTERACTIVE


def stamp(request: GenerationRequest) -> GenerationRequest:
    """The request with the current caller and class, unless it names its own."""
    if request.caller is None:
        request.caller = caller.get()
    if request.work_class == WorkClass.INTERACTIVE:
        request.work_class = work_class.get()
    return request

"""Which deployment answered a request, for the `X-Served-By` response header: set by the router when a model has
several deployments, read by the trace middleware when the response starts. The holder is a list shared by every
task of the request (a disconnect watcher runs the generation in a task of its own)."""

from __future__ import annotations

from contextvars import ContextVar

_served: ContextVar[list[str] | None] = ContextVar("served_by", default=None)


def start_request() -> list[str]:
    holder: list[str] = []
    _served.set(holder)
    return holder


def note_served(deployment: str) -> None:
    holder = _served.get()
    if holder is not None:
        holder.append(deployment)


def served_by() -> str | None:
    """The deployment that answered the request being served, when the router named one."""
    holder = _served.get()
    return holder[-1] if holder else None

"""A streamed response as typed Server-Sent Events (`event: <type>` and `data: {type, sequence_number, …}`), in the
order OpenAI's SDKs check:

    response.created, response.in_progress
    per message:        response.output_item.added, response.content_part.added,
                        response.output_text.delta …, response.output_text.done,
                        response.content_part.done, response.output_item.done
    per function call:  response.output_item.added, response.function_call_arguments.delta …,
                        response.function_call_arguments.done, response.output_item.done
    response.completed (or response.incomplete when max_output_tokens cut the answer)

A failure after the stream started ends it with an `error` event, then `response.failed`. The response is stored
(with `store: true`) before its last event is sent, so a client can continue it as soon as it has seen it end.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sop_llm.api.internal_error import internal_error
from sop_llm.api.openai.responses.output import (
    ResponseDraft,
    function_call_item,
    item_status,
    message_item,
    output_text,
)
from sop_llm.api.responses import sse_event
from sop_llm.infra.errors import AppError
from sop_llm.providers.types import Chunk, FinishReason, Usage
from sop_llm.services.usage.record import note_error

Store = Callable[[dict[str, Any]], Awaitable[None]]


class _Items:
    """Chunks → output-item events. A message opens at the first text and closes when a function call starts (or
    at the end); each tool call of the chunks (by its index) is a function_call item of its own."""

    def __init__(self) -> None:
        self.output: list[dict[str, Any]] = []  # every item so far, in output order, as it stands
        self.message: int | None = None  # the output index of the open message
        self.texts: list[str] = []  # the open message's text so far
        self.calls: dict[int, int] = {}  # an open tool call's chunk index → its output index

    def feed(self, chunk: Chunk) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.text:
            if self.message is None:
                events += self._open_message()
            self.texts.append(chunk.text)
            events.append(
                {
                    **self._at(self.message),
                    "type": "response.output_text.delta",
                    "content_index": 0,
                    "delta": chunk.text,
                    "logprobs": [],
                }
            )
        for call in chunk.tool_calls or []:
            events += self._close_message(None, "completed")
            position = int(call.get("index", len(self.calls)))
            function = call.get("function") or {}
            if position not in self.calls:
                item = function_call_item(call.get("id"), function.get("name") or "", "", "in_progress")
                self.calls[position] = len(self.output)
                self.output.append(item)
                events.append(
                    {"type": "response.output_item.added", "output_index": self.calls[position], "item": dict(item)}
                )
            item = self.output[self.calls[position]]
            if function.get("name") and not item["name"]:
                item["name"] = function["name"]
            if fragment := function.get("arguments"):
                item["arguments"] += fragment
                events.append(
                    {
                        **self._at(self.calls[position]),
                        "type": "response.function_call_arguments.delta",
                        "delta": fragment,
                    }
                )
        return events

    def finish(self, finish_reason: FinishReason | None, final_text: str | None) -> list[dict[str, Any]]:
        """Close every open item. `final_text` replaces the message's streamed text (the JSON pipeline's repair)."""
        status = item_status(finish_reason)
        events = self._open_message() if not self.output else []
        events += self._close_message(final_text, status)
        for index in sorted(self.calls.values()):
            item = self.output[index]
            item["status"] = status
            events.append(
                {
                    **self._at(index),
                    "type": "response.function_call_arguments.done",
                    "name": item["name"],
                    "arguments": item["arguments"],
                }
            )
            events.append({"type": "response.output_item.done", "output_index": index, "item": dict(item)})
        self.calls.clear()
        return events

    def cut_short(self) -> list[dict[str, Any]]:
        """The output so far, open items marked incomplete (for a failed response)."""
        if self.message is not None:
            self.output[self.message] = message_item("".join(self.texts), "incomplete", self.output[self.message]["id"])
        for index in self.calls.values():
            self.output[index]["status"] = "incomplete"
        return self.output

    def _at(self, index: int | None) -> dict[str, Any]:
        assert index is not None
        return {"item_id": self.output[index]["id"], "output_index": index}

    def _open_message(self) -> list[dict[str, Any]]:
        item = message_item("", "in_progress")
        item["content"] = []
        self.message = len(self.output)
        self.texts = []
        self.output.append(item)
        return [
            {"type": "response.output_item.added", "output_index": self.message, "item": dict(item)},
            {
                **self._at(self.message),
                "type": "response.content_part.added",
                "content_index": 0,
                "part": output_text(""),
            },
        ]

    def _close_message(self, final_text: str | None, status: str) -> list[dict[str, Any]]:
        if self.message is None:
            return []
        index, self.message = self.message, None
        text = "".join(self.texts) if final_text is None else final_text
        item = message_item(text, status, self.output[index]["id"])
        self.output[index] = item
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            {**where, "type": "response.output_text.done", "text": text, "logprobs": []},
            {**where, "type": "response.content_part.done", "part": output_text(text)},
            {"type": "response.output_item.done", "output_index": index, "item": item},
        ]


async def response_events(
    chunks: AsyncIterator[Chunk], draft: ResponseDraft, store: Store | None
) -> AsyncIterator[bytes]:
    numbers = itertools.count()

    def frame(event: dict[str, Any]) -> bytes:
        event["sequence_number"] = next(numbers)
        return sse_event(event, event["type"])

    opening = draft.body("in_progress", [])
    yield frame({"type": "response.created", "response": opening})
    yield frame({"type": "response.in_progress", "response": opening})
    items = _Items()
    finish: FinishReason | None = None
    usage: Usage | None = None
    verdict: dict[str, Any] | None = None
    try:
        async for chunk in chunks:
            for event in items.feed(chunk):
                yield frame(event)
            finish = chunk.finish_reason or finish
            usage = chunk.usage or usage
            verdict = chunk.json or verdict
        for event in items.finish(finish, verdict.get("text") if verdict else None):
            yield frame(event)
        final = draft.body("completed", items.output, usage, finish, verdict=verdict)
        if store is not None:
            await store(final)
    except AppError as exc:
        note_error(exc.error_code)
        error = exc
    except Exception as exc:  # a bug must still end the stream the way clients understand
        error = internal_error(exc, "a response stream")
    else:
        yield frame({"type": f"response.{final['status']}", "response": final})
        return
    yield frame({"type": "error", "code": error.error_code, "message": error.message, "param": error.param})
    code = "rate_limit_exceeded" if error.status_code == 429 else "server_error"
    failed = draft.body("failed", items.cut_short(), error={"code": code, "message": error.message})
    if store is not None:
        with contextlib.suppress(AppError):  # the store may be what failed
            await store(failed)
    yield frame({"type": "response.failed", "response": failed})

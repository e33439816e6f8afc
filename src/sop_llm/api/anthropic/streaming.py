"""SSE framing of a streamed Anthropic message: each event `event: <type>\\ndata: <json>\\n\\n`, in the order
Anthropic's clients rely on —

    message_start (the message with empty content; usage with input_tokens)
    content_block_start, ping (once, after the first block opens), content_block_delta …, content_block_stop
        (text blocks get `text_delta`s; tool_use blocks `input_json_delta`s with `partial_json`), per block
    message_delta (stop_reason, stop_sequence; usage with the final counts)
    message_stop

An error after the stream started ends it with an `error` event in Anthropic's shape.

`message_start` carries an estimate of input_tokens (about four characters a token): a generation reports its
exact counts only at its end, and the response has started long before. `message_delta` carries the final counts,
input_tokens included, which the SDK takes over into its final message (exact, unless a stop sequence cut the
generation short: see stops.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sop_llm.api.anthropic.errors import anthropic_body
from sop_llm.api.anthropic.replies import stop_reason, tool_use_id, usage_body
from sop_llm.api.anthropic.stops import StopSequences
from sop_llm.api.internal_error import internal_error
from sop_llm.api.responses import sse_event
from sop_llm.infra.errors import AppError
from sop_llm.providers.types import Chunk, FinishReason, Usage
from sop_llm.services.usage.record import note_error

PING = {"type": "ping"}


def _frame(event: dict[str, Any]) -> bytes:
    return sse_event(event, event["type"])


class _Blocks:
    """Chunks → content block events: one block open at a time, a new one whenever the kind of content changes
    (text, or a tool call with an id of its own)."""

    def __init__(self) -> None:
        self.index = -1  # the block opened last
        self.open: str | None = None  # "text" or "tool_use" while a block is open
        self.calls: dict[int, int] = {}  # the chunk's tool-call index → its block index

    def feed(self, chunk: Chunk) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.text:
            if self.open != "text":
                events += self._start({"type": "text", "text": ""})
            events.append(self._delta(self.index, {"type": "text_delta", "text": chunk.text}))
        for call in chunk.tool_calls or []:
            position = call.get("index", len(self.calls))
            function = call.get("function") or {}
            if position not in self.calls:
                block = {"type": "tool_use", "id": tool_use_id(call.get("id")), "name": function.get("name") or ""}
                events += self._start({**block, "input": {}})
                self.calls[position] = self.index
            if fragment := function.get("arguments"):
                events.append(self._delta(self.calls[position], {"type": "input_json_delta", "partial_json": fragment}))
        return events

    def _start(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        events = self.stop()
        self.index += 1
        self.open = block["type"]
        events.append({"type": "content_block_start", "index": self.index, "content_block": block})
        if self.index == 0:
            events.append(PING)
        return events

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": index, "delta": delta}

    def stop(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        self.open = None
        return [{"type": "content_block_stop", "index": self.index}]


async def message_events(
    chunks: AsyncIterator[Chunk], start: dict[str, Any], stops: StopSequences | None
) -> AsyncIterator[bytes]:
    """`start` is the message of `message_start`: id, model and usage with the estimated input_tokens."""
    yield _frame({"type": "message_start", "message": start})
    blocks = _Blocks()
    finish: FinishReason | None = None
    usage: Usage | None = None
    try:
        async for chunk in chunks:
            for event in blocks.feed(chunk):
                yield _frame(event)
            finish = chunk.finish_reason or finish
            usage = chunk.usage or usage
        for event in blocks.stop():
            yield _frame(event)
        if blocks.index < 0:
            yield _frame(PING)
        matched = stops.matched if stops is not None else None
        final = usage or Usage(start["usage"]["input_tokens"], 0)
        delta = {"stop_reason": stop_reason(finish, bool(blocks.calls), matched), "stop_sequence": matched}
        yield _frame({"type": "message_delta", "delta": delta, "usage": usage_body(final)})
        yield _frame({"type": "message_stop"})
    except AppError as exc:
        note_error(exc.error_code)
        yield _frame(anthropic_body(exc))
    except Exception as exc:  # a bug must still end the stream the way clients understand
        yield _frame(anthropic_body(internal_error(exc, "a stream")))

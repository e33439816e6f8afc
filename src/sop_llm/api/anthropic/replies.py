"""The pieces of an Anthropic message: stop reasons, `tool_use` blocks with `toolu_` ids, usage, and the whole
message object of a non-streamed answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sop_llm.infra.errors import ProviderError
from sop_llm.providers.types import Chunk, Completion, FinishReason, Usage

_STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "cancelled": "end_turn",
}


def stop_reason(finish: FinishReason | None, has_tool_calls: bool, matched: str | None) -> str:
    if matched is not None:
        return "stop_sequence"
    if finish == "length":
        return "max_tokens"
    if has_tool_calls:
        return "tool_use"
    return _STOP_REASONS.get(finish or "stop", "end_turn")


def tool_use_id(call_id: str | None) -> str:
    """Anthropic's ids start with `toolu_`; others' (`call_…`) are renamed, consistently, so a `tool_result` sent
    back with the new id reaches the provider under that same id."""
    if not call_id:
        return f"toolu_{uuid.uuid4().hex[:24]}"
    return call_id if call_id.startswith("toolu_") else f"toolu_{call_id.removeprefix('call_')}"


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _tool_use_block(call: dict[str, Any], model: str) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise ProviderError(f"'{model}' called '{function.get('name')}' with arguments that are not a JSON object")
    return {"type": "tool_use", "id": tool_use_id(call.get("id")), "name": function.get("name"), "input": arguments}


def message_body(message_id: str, model: str, completion: Completion, matched: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": completion.text}] if completion.text else []
    content += [_tool_use_block(call, model) for call in completion.tool_calls or []]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(completion.finish_reason, bool(completion.tool_calls), matched),
        "stop_sequence": matched,
        "usage": usage_body(completion.usage),
    }


@dataclass
class _Calls:
    """OpenAI-style tool-call deltas (`index`, `id` and name once, then `arguments` fragments) put together."""

    calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, delta: dict[str, Any]) -> None:
        call = self.calls.setdefault(
            delta.get("index", len(self.calls)), {"id": None, "type": "function", "function": {"name": None}}
        )
        function = delta.get("function") or {}
        call["id"] = call["id"] or delta.get("id")
        call["function"]["name"] = call["function"]["name"] or function.get("name")
        call["function"]["arguments"] = call["function"].get("arguments", "") + (function.get("arguments") or "")


async def collect(chunks: AsyncIterator[Chunk]) -> Completion:
    """A whole answer from a stream of chunks."""
    texts: list[str] = []
    calls = _Calls()
    finish: FinishReason = "stop"
    usage = Usage()
    async for chunk in chunks:
        texts.append(chunk.text)
        for delta in chunk.tool_calls or []:
            calls.add(delta)
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
    tool_calls = [calls.calls[i] for i in sorted(calls.calls)]
    return Completion("".join(texts), finish, usage, tool_calls or None)

"""The response object in OpenAI's shape: the answer as output items (an assistant `message` with `output_text`,
and/or `function_call` items), the status (`incomplete` when max_output_tokens cut the answer), usage, and the
request's settings echoed back."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sop_llm.api.openai.responses.items import new_id, text_part
from sop_llm.api.openai.responses.protocol import ResponseCreateRequest
from sop_llm.api.openai.streaming import JSON_VERDICT_FIELD
from sop_llm.providers.types import Completion, FinishReason, Usage

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def output_text(text: str) -> dict[str, Any]:
    return {**text_part(text, assistant=True), "logprobs": []}


def message_item(text: str, status: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text(text)],
    }


def function_call_item(call_id: str | None, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call_id or new_id("call"),
        "name": name,
        "arguments": arguments,
    }


def item_status(finish_reason: FinishReason | None) -> str:
    return "incomplete" if finish_reason in _INCOMPLETE else "completed"


def completion_output(completion: Completion) -> list[dict[str, Any]]:
    """A message when there is text (or nothing else), then one function_call item per tool call."""
    status = item_status(completion.finish_reason)
    output = []
    if completion.text or not completion.tool_calls:
        output.append(message_item(completion.text, status))
    for call in completion.tool_calls or []:
        function = call.get("function") or {}
        output.append(
            function_call_item(call.get("id"), function.get("name", ""), function.get("arguments", ""), status)
        )
    return output


def usage_body(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


class ResponseDraft:
    """What a response object says before the answer exists: its id, creation time and the request's settings;
    `model` is set once the request has been routed (to the deployment that answers)."""

    def __init__(self, body: ResponseCreateRequest) -> None:
        self.id = f"resp_{secrets.token_hex(24)}"
        self.created_at = int(time.time())
        self.model = body.model or ""
        text: dict[str, Any] = {
            "format": body.text_format().echo(),
            "verbosity": (body.text and body.text.verbosity) or "medium",
        }
        self._echo: dict[str, Any] = {
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "max_tool_calls": None,
            "metadata": body.metadata or {},
            "parallel_tool_calls": body.parallel_tool_calls,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.store,
            "temperature": body.temperature,
            "text": text,
            "tool_choice": body.tool_choice,
            "tools": [tool.model_dump(exclude_none=True) for tool in body.function_tools()],
            "top_p": body.top_p,
            "truncation": "disabled",
            "user": user if isinstance(user := getattr(body, "user", None), str) else None,
        }

    def body(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None = None,
        finish_reason: FinishReason | None = None,
        error: dict[str, Any] | None = None,
        verdict: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The response object; `finish_reason` "length" (or "content_filter") makes it incomplete."""
        reason = _INCOMPLETE.get(finish_reason or "")
        if status == "completed" and reason is not None:
            status = "incomplete"
        reply: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error,
            "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "model": self.model,
            "output": output,
            **self._echo,
            "usage": usage_body(usage),
        }
        if verdict is not None:
            reply[JSON_VERDICT_FIELD] = verdict
        return reply

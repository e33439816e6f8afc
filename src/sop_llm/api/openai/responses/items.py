"""A request's `input` as Responses-API items in the one shape they are stored and listed in, each with an id:

    message               {id: msg_…, type: message, role, status, content: [{type: input_text | output_text, text}]}
    function_call         {id: fc_…, type: function_call, call_id, name, arguments, status}
    function_call_output  {id: fco_…, type: function_call_output, call_id, output, status}

Text parts of user, system and developer messages are `input_text`, of assistant messages `output_text`. Anything
else (images, files, reasoning items, item references, built-in tool calls) is refused with a 400 saying what is
taken instead.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from sop_llm.api.openai.responses.protocol import Tolerant, validated
from sop_llm.infra.errors import BadRequestError, UnsupportedFeatureError
from sop_llm.infra.trace import new_trace_id

ITEM_TYPES = "message, function_call and function_call_output"
TEXT_PARTS = ("input_text", "output_text")


class _Message(Tolerant):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]
    id: str | None = Field(None, min_length=1, max_length=64)


class _FunctionCall(Tolerant):
    call_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    arguments: str
    id: str | None = Field(None, min_length=1, max_length=64)


class _FunctionCallOutput(Tolerant):
    call_id: str = Field(min_length=1, max_length=64)
    output: str | list[dict[str, Any]]
    id: str | None = Field(None, min_length=1, max_length=64)


def new_id(prefix: str) -> str:
    return f"{prefix}_{new_trace_id()}"


def text_part(text: str, assistant: bool) -> dict[str, Any]:
    if assistant:
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def user_message(text: str) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [text_part(text, False)],
    }


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [user_message(value)]
    if not value:
        raise BadRequestError("input: send a string or at least one item", param="input")
    return [_item(item, f"input[{index}]") for index, item in enumerate(value)]


def _item(item: dict[str, Any], where: str) -> dict[str, Any]:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        message = validated(_Message, item, where)
        assistant = message.role == "assistant"
        return {
            "id": message.id or new_id("msg"),
            "type": "message",
            "role": message.role,
            "status": "completed",
            "content": _text_parts(message.content, assistant, f"{where}.content"),
        }
    if kind == "function_call":
        call = validated(_FunctionCall, item, where)
        try:
            json.loads(call.arguments)
        except ValueError:
            raise BadRequestError(
                f"{where}.arguments: must be a JSON string (the function's arguments as JSON)",
                param=f"{where}.arguments",
            ) from None
        return {
            "id": call.id or new_id("fc"),
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
            "status": "completed",
        }
    if kind == "function_call_output":
        result = validated(_FunctionCallOutput, item, where)
        output = result.output
        if isinstance(output, list):
            output = _text_parts(output, False, f"{where}.output")
        return {
            "id": result.id or new_id("fco"),
            "type": "function_call_output",
            "call_id": result.call_id,
            "output": output,
            "status": "completed",
        }
    if kind == "item_reference":
        raise UnsupportedFeatureError(
            f"{where}: item references are not supported; send the item itself, or continue a stored response with "
            "previous_response_id",
            param=where,
        )
    if isinstance(kind, str) and kind:
        raise UnsupportedFeatureError(
            f"{where}: '{kind[:64]}' items are not supported; this service takes {ITEM_TYPES} items", param=where
        )
    raise BadRequestError(
        f"{where}: every item needs a type ({ITEM_TYPES}), or a role for a message", param=f"{where}.type"
    )


def _text_parts(content: str | list[dict[str, Any]], assistant: bool, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [text_part(content, assistant)]
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(text_part(part["refusal"], assistant))
        elif kind in TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append(text_part(part["text"], assistant))
        elif kind in TEXT_PARTS:
            raise BadRequestError(f"{where}[{index}].text: a string is required", param=f"{where}[{index}].text")
        else:
            raise UnsupportedFeatureError(
                f"{where}[{index}]: '{str(kind)[:64]}' parts are not supported; send text (input_text parts or a "
                "string)",
                param=f"{where}[{index}]",
            )
    return parts


def item_text(parts: str | list[dict[str, Any]]) -> str:
    """The text of a stored item's content or output."""
    if isinstance(parts, str):
        return parts
    return "".join(part.get("text", "") for part in parts)

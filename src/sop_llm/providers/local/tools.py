"""Function calling for local models whose chat template knows nothing about tools.

The tools are described in a system message. When a call is forced (`tool_choice` "required" or a named
function) the answer is constrained by a JSON schema — `{"name": <tool>, "arguments": {...}}` — which llama.cpp
turns into a grammar, so the call is always well-formed. With "auto" the model answers freely and an answer that
is such a JSON object (optionally in a code fence) becomes a tool call. Tool results and earlier calls in the
history are rendered as plain turns the template accepts.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sop_llm.infra.errors import BadRequestError
from sop_llm.providers.types import ChatMessage

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class ToolPlan:
    """What a request with tools needs: the messages to render and, for a forced call, the schema to enforce."""

    messages: list[ChatMessage]
    forced_schema: dict[str, Any] | None
    tool_names: frozenset[str]


def _functions(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    functions = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if tool.get("type", "function") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequestError(
                f"tools[{i}] must be {{type: function, function: {{name, parameters}}}}", param="tools"
            )
        functions.append(function)
    return functions


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
    }


def plan_tools(messages: list[ChatMessage], tools: list[dict[str, Any]], tool_choice: Any) -> ToolPlan:
    functions = _functions(tools)
    names = frozenset(f["name"] for f in functions)
    forced: list[dict[str, Any]] | None = None
    if tool_choice == "required":
        forced = functions
    elif isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        forced = [f for f in functions if f["name"] == wanted]
        if not forced:
            raise BadRequestError(f"tool_choice names '{wanted}', which is not among the tools", param="tool_choice")
    elif tool_choice not in (None, "auto"):
        raise BadRequestError("tool_choice must be none, auto, required or {type: function, ...}", param="tool_choice")
    described = json.dumps(
        [
            {"name": f["name"], "description": f.get("description", ""), "parameters": f.get("parameters", {})}
            for f in functions
        ]
    )
    instruction = (
        f"You can call these tools: {described}\n"
        'To call a tool, answer with only a JSON object: {"name": "<tool name>", "arguments": {...}}.'
    )
    if forced is None:
        instruction += " If no tool is needed, answer normally."
    schema = None
    if forced is not None:
        schema = _call_schema(forced[0]) if len(forced) == 1 else {"anyOf": [_call_schema(f) for f in forced]}
    return ToolPlan([ChatMessage("system", instruction), *plain_history(messages)], schema, names)


def plain_history(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Tool results and earlier tool calls as ordinary turns, for templates without a tool role."""
    plain = []
    for message in messages:
        if message.role == "tool":
            plain.append(
                ChatMessage("user", f"Tool result ({message.tool_call_id or 'call'}): {message.content or ''}")
            )
        elif message.role == "assistant" and message.tool_calls:
            calls = [
                {"name": c["function"]["name"], "arguments": json.loads(c["function"].get("arguments") or "{}")}
                for c in message.tool_calls
            ]
            plain.append(ChatMessage("assistant", json.dumps(calls[0] if len(calls) == 1 else calls)))
        else:
            plain.append(ChatMessage(message.role, message.content))
    return plain


def parse_tool_call(text: str, names: frozenset[str]) -> list[dict[str, Any]] | None:
    """OpenAI `tool_calls` if the answer is a call of one of the tools, else None (a plain answer)."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    if not stripped.startswith("{"):
        return None
    try:
        call = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or call.get("name") not in names:
        return None
    arguments = call.get("arguments", {})
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(arguments)},
        }
    ]

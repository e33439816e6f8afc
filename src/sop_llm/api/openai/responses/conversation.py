"""A Responses-API request onto the service's chat generation: instructions and items become chat messages, flat
function tools become chat tools, `text.format` becomes the JSON mode the structured-output pipeline serves."""

from __future__ import annotations

from typing import Any

from sop_llm.api.openai.responses.items import item_text
from sop_llm.api.openai.responses.protocol import FunctionTool, ResponseCreateRequest
from sop_llm.infra.errors import BadRequestError, UnsupportedFeatureError
from sop_llm.providers.types import ChatMessage, GenerationRequest


def generation_request(
    body: ResponseCreateRequest, items: list[dict[str, Any]], first_input: int, default_max: int
) -> GenerationRequest:
    """`items`: the whole conversation; those from `first_input` on are this request's `input`."""
    tools, tool_choice = chat_tools(body.function_tools(), body.tool_choice)
    return GenerationRequest(
        messages=chat_messages(body.instructions, items, first_input),
        max_tokens=body.max_output_tokens or default_max,
        max_tokens_asked=body.max_output_tokens is not None,
        temperature=body.temperature,
        top_p=body.top_p,
        json_mode=body.text_format().to_json_mode(),
        tools=tools,
        tool_choice=tool_choice,
    )


def chat_messages(instructions: str | None, items: list[dict[str, Any]], first_input: int) -> list[ChatMessage]:
    """Consecutive function calls become one assistant turn with several tool calls (its content an empty string,
    not null: some servers' chat templates read it); each output answers a call made earlier in the conversation."""
    messages = [ChatMessage("system", instructions)] if instructions else []
    calls: list[dict[str, Any]] = []
    called: set[str] = set()
    for index, item in enumerate(items):
        if item["type"] == "function_call":
            function = {"name": item["name"], "arguments": item["arguments"]}
            calls.append({"id": item["call_id"], "type": "function", "function": function})
            called.add(item["call_id"])
            continue
        if calls:
            messages.append(ChatMessage("assistant", "", tool_calls=calls))
            calls = []
        if item["type"] == "function_call_output":
            if item["call_id"] not in called:
                where = f"input[{index - first_input}]" if index >= first_input else "previous_response_id"
                raise BadRequestError(
                    f"{where}: function_call_output with call_id '{item['call_id']}' answers no function_call "
                    "before it in the conversation",
                    param=f"{where}.call_id",
                )
            messages.append(ChatMessage("tool", item_text(item["output"]), tool_call_id=item["call_id"]))
        else:
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append(ChatMessage(role, item_text(item["content"])))
    if calls:
        messages.append(ChatMessage("assistant", "", tool_calls=calls))
    return messages


def chat_tools(tools: list[FunctionTool], choice: str | dict[str, Any]) -> tuple[list[dict[str, Any]] | None, Any]:
    """(chat tools, chat tool_choice); (None, None) without tools."""
    names = {tool.name for tool in tools}
    chat_choice: Any = choice
    if isinstance(choice, dict):
        name = choice.get("name")
        if choice.get("type") != "function" or not isinstance(name, str):
            raise UnsupportedFeatureError(
                "tool_choice: takes auto, none, required or {type: function, name}; other kinds of tool are not "
                "supported by this service",
                param="tool_choice",
            )
        if name not in names:
            raise BadRequestError(f"tool_choice names '{name[:64]}', which is not among the tools", param="tool_choice")
        chat_choice = {"type": "function", "function": {"name": name}}
    elif choice == "required" and not tools:
        raise BadRequestError("tool_choice: 'required' needs at least one tool in tools", param="tool_choice")
    if not tools:
        return None, None
    chat = []
    for tool in tools:
        function: dict[str, Any] = {
            "name": tool.name,
            "parameters": tool.parameters or {"type": "object", "properties": {}},
        }
        if tool.description is not None:
            function["description"] = tool.description
        if tool.strict is not None:
            function["strict"] = tool.strict
        chat.append({"type": "function", "function": function})
    return chat, chat_choice

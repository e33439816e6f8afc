"""An Anthropic conversation in the service's terms: the provider-neutral chat messages and OpenAI-style tools that
every deployment takes (the `anthropic` provider maps them back to Anthropic's shapes).

- `system` (a string or text blocks) becomes the first, system, message.
- A user turn's text blocks become a user message; each `tool_result` block becomes a tool message answering its
  `tool_use_id` (text content; `is_error` marks it as the tool's error).
- An assistant turn's text and `tool_use` blocks become one assistant message with tool calls.
- `thinking` blocks in the history are skipped (the service never produces them); images, documents and other
  block types are refused with a 400 that names them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sop_llm.api.anthropic.protocol import ContentBlock, Conversation, Message, TextPart, Tool, ToolChoice
from sop_llm.infra.errors import BadRequestError, UnsupportedFeatureError
from sop_llm.providers.types import ChatMessage

_SKIPPED = frozenset({"thinking", "redacted_thinking"})
CHARS_PER_TOKEN = 4  # the estimate where no tokenizer is at hand


def _text_parts(parts: list[TextPart], where: str) -> str:
    texts = []
    for i, part in enumerate(parts):
        if part.type != "text" or part.text is None:
            raise UnsupportedFeatureError(
                f"{where}[{i}]: '{part.type}' blocks are not supported here; send text blocks", param=where
            )
        texts.append(part.text)
    return "\n\n".join(texts)


def system_text(system: str | list[TextPart] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    return _text_parts(system, "system") or None


def _tool_result(block: ContentBlock, where: str) -> ChatMessage:
    if not block.tool_use_id:
        raise BadRequestError(f"{where}: a tool_result block needs tool_use_id", param=where)
    content = block.content
    text = _text_parts(content, f"{where}.content") if isinstance(content, list) else content or ""
    if block.is_error:
        text = f"Error: {text}"
    return ChatMessage("tool", text, tool_call_id=block.tool_use_id)


def _tool_call(block: ContentBlock, where: str) -> dict[str, Any]:
    if not block.id or not block.name or block.input is None:
        raise BadRequestError(f"{where}: a tool_use block needs id, name and input (an object)", param=where)
    arguments = json.dumps(block.input, ensure_ascii=False)
    return {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}}


def _turn(message: Message, index: int) -> list[ChatMessage]:
    """One Anthropic turn as chat messages, in order (a user turn may hold several tool results and text)."""
    if isinstance(message.content, str):
        return [ChatMessage(message.role, message.content)]
    out: list[ChatMessage] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []

    def flush_text() -> None:
        if texts and message.role == "user":
            out.append(ChatMessage("user", "\n\n".join(texts)))
            texts.clear()

    for i, block in enumerate(message.content):
        where = f"messages[{index}].content[{i}]"
        if block.type == "text":
            if block.text is None:
                raise BadRequestError(f"{where}: a text block needs text", param=where)
            texts.append(block.text)
        elif block.type == "tool_use" and message.role == "assistant":
            calls.append(_tool_call(block, where))
        elif block.type == "tool_result" and message.role == "user":
            flush_text()
            out.append(_tool_result(block, where))
        elif block.type not in _SKIPPED:
            raise UnsupportedFeatureError(
                f"{where}: '{block.type}' blocks are not supported in a {message.role} turn; "
                "send text, tool_use (assistant) and tool_result (user) blocks",
                param=where,
            )
    if message.role == "assistant":
        if texts or calls:
            out.append(ChatMessage("assistant", "\n\n".join(texts) or None, tool_calls=calls or None))
    else:
        flush_text()
    return out


def chat_messages(body: Conversation) -> list[ChatMessage]:
    system = system_text(body.system)
    messages = [ChatMessage("system", system)] if system else []
    for index, message in enumerate(body.messages):
        messages.extend(_turn(message, index))
    if not messages:
        raise BadRequestError("messages: every turn is empty; send some text", param="messages")
    return messages


def _function(tool: Tool, index: int) -> dict[str, Any]:
    if tool.type not in (None, "custom"):
        raise UnsupportedFeatureError(
            f"tools[{index}]: '{tool.type}' is a tool that Anthropic's servers run; this service takes client "
            "tools only ({name, description, input_schema})",
            param=f"tools[{index}]",
        )
    if tool.input_schema is None:
        raise BadRequestError(f"tools[{index}]: input_schema is required", param=f"tools[{index}].input_schema")
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def tools_and_choice(body: Conversation) -> tuple[list[dict[str, Any]] | None, Any]:
    """OpenAI-style `tools` and `tool_choice`, as the providers take them."""
    tools = [_function(tool, i) for i, tool in enumerate(body.tools or [])]
    choice = _tool_choice(body.tool_choice, {t.name for t in body.tools or []})
    return tools or None, choice if tools else None


def _tool_choice(choice: ToolChoice | None, names: set[str]) -> Any:
    if choice is None or choice.type == "auto":
        return "auto" if choice else None
    if choice.type == "none":
        return "none"
    if not names:
        raise BadRequestError(f"tool_choice: type '{choice.type}' needs tools", param="tool_choice")
    if choice.type == "any":
        return "required"
    if choice.name not in names:
        raise BadRequestError(
            f"tool_choice: names '{choice.name}', which is not among the tools ({', '.join(sorted(names))})",
            param="tool_choice.name",
        )
    return {"type": "function", "function": {"name": choice.name}}


def estimate_tokens(messages: list[ChatMessage], tools: list[dict[str, Any]] | None) -> int:
    """About four characters a token, over the text, the tool calls and the tool definitions: the count where the
    model's tokenizer is not at hand (remote deployments) and before a stream's own count arrives."""
    chars = 0
    for message in messages:
        chars += len(message.content or "")
        for call in message.tool_calls or []:
            chars += len(call["function"]["name"]) + len(call["function"]["arguments"])
    if tools:
        chars += len(json.dumps(tools))
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))

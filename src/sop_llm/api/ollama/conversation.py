"""An Ollama conversation in the service's terms: provider-neutral chat messages, OpenAI-style tools, a JSON mode.

- `system`, `user` and `assistant` messages pass as they are; an assistant's `tool_calls` (arguments as an object)
  become OpenAI-style calls with their arguments as JSON text.
- Ollama's clients often send calls without ids, and tool results with only `tool_name`: each call without an id
  gets one (`call_<message>_<call>`), and a result without `tool_call_id` answers the earliest call of the latest
  assistant turn with that tool's name that no result has answered yet, so providers that pair results with calls
  by id (OpenAI's, Anthropic's) receive a consistent conversation.
- `images`, `think` (true or a level), and on /api/generate `suffix`, `template` and `context`, are refused with a
  400 that names them: the service's models read text, render their own chat template, and neither think aloud nor
  fill in the middle.
- `format` is `"json"` (any JSON object) or a JSON schema: the service's JSON pipeline, as `response_format` on
  /v1/chat/completions.
"""

from __future__ import annotations

import json
from typing import Any

from sop_llm.api.ollama.protocol import ChatRequest, GenerateRequest, Message, ToolCall
from sop_llm.infra.errors import BadRequestError, UnsupportedFeatureError
from sop_llm.providers.types import ChatMessage, JsonMode

ROLES = frozenset({"system", "user", "assistant", "tool"})


def _call(call: ToolCall, message: int, index: int) -> dict[str, Any]:
    arguments = call.function.arguments
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    call_id = call.id or f"call_{message}_{index}"
    return {"id": call_id, "type": "function", "function": {"name": call.function.name, "arguments": text}}


def _answered(pending: list[tuple[str, str]], message: Message) -> str | None:
    """The id of the call this tool result answers (taken off `pending`, the unanswered calls: (id, tool name))."""
    for position, (call_id, name) in enumerate(pending):
        if (message.tool_call_id or None) == call_id or (
            not message.tool_call_id and (message.tool_name is None or message.tool_name == name)
        ):
            del pending[position]
            return call_id
    return message.tool_call_id


def chat_messages(messages: list[Message]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    pending: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        role = message.role.lower()
        if role not in ROLES:
            raise BadRequestError(
                f"messages[{i}].role: '{message.role}'; a message is from system, user, assistant or tool",
                param=f"messages[{i}].role",
            )
        if message.images:
            raise UnsupportedFeatureError(
                f"messages[{i}].images: the service's models read text only; send the message without images",
                param=f"messages[{i}].images",
            )
        content = message.content or ""
        if role == "assistant":
            calls = [_call(call, i, j) for j, call in enumerate(message.tool_calls or [])]
            pending = [(call["id"], call["function"]["name"]) for call in calls]
            out.append(ChatMessage("assistant", content if content or not calls else None, tool_calls=calls or None))
        elif role == "tool":
            out.append(ChatMessage("tool", content, tool_call_id=_answered(pending, message)))
        else:
            out.append(ChatMessage(role, content))
    return out


def generate_prompt(body: GenerateRequest) -> tuple[list[ChatMessage] | None, str | None]:
    """(messages, None) for a templated prompt, (None, prompt) for a raw one."""
    if body.suffix:
        raise UnsupportedFeatureError(
            f"{json.dumps(body.model)} does not support insert: no model here fills in the middle; leave suffix out",
            param="suffix",
        )
    if body.template:
        raise UnsupportedFeatureError(
            "template: each model's own chat template renders the prompt here; leave template out, or send "
            "raw: true with the prompt already rendered",
            param="template",
        )
    if body.context:
        raise UnsupportedFeatureError(
            "context: token contexts of earlier answers are not kept here; send the conversation to /api/chat",
            param="context",
        )
    if body.images:
        raise UnsupportedFeatureError("images: the service's models read text only", param="images")
    prompt = body.prompt or ""
    if body.raw:
        if body.system:
            raise BadRequestError("raw mode does not support template, system, or context", param="system")
        return None, prompt
    system = [ChatMessage("system", body.system)] if body.system else []
    return [*system, ChatMessage("user", prompt)], None


def refuse_thinking(model: str, think: bool | str | None) -> None:
    if think is None or think is False:
        return
    if think is True or think in ("low", "medium", "high", "max"):
        raise UnsupportedFeatureError(
            f"{json.dumps(model)} does not support thinking; send think: false or leave it out", param="think"
        )
    raise BadRequestError(f'think: {think!r}; it is true, false, or "low", "medium", "high", "max"', param="think")


def json_mode(answer_format: Any) -> JsonMode | None:
    if answer_format is None or answer_format == "":
        return None
    if answer_format == "json":
        return JsonMode()
    if isinstance(answer_format, dict):
        return JsonMode(answer_format)
    raise BadRequestError(
        f'format: {json.dumps(answer_format)[:80]}; expected "json" or a JSON schema (an object)', param="format"
    )


def tools_and_choice(body: ChatRequest) -> tuple[list[dict[str, Any]] | None, Any]:
    """OpenAI-style `tools` (Ollama's are already) and `tool_choice` (non-standard here; "auto" when absent)."""
    tools = body.tools or []
    names: set[str] = set()
    for i, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise BadRequestError(
                f"tools[{i}] must be {{type: function, function: {{name, description, parameters}}}}",
                param=f"tools[{i}]",
            )
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise BadRequestError(f"tools[{i}].function.name is required", param=f"tools[{i}].function.name")
        names.add(function["name"])
    if not tools:
        return None, None
    return tools, _tool_choice(body.tool_choice, names)


def _tool_choice(choice: Any, names: set[str]) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    function = choice.get("function") if isinstance(choice, dict) else None
    named = function.get("name") if isinstance(function, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(named, str):
        raise BadRequestError(
            'tool_choice: "auto", "none", "required" or {"type": "function", "function": {"name": …}}',
            param="tool_choice",
        )
    if named not in names:
        raise BadRequestError(
            f"tool_choice names '{named}', which is not among the tools ({', '.join(sorted(names))})",
            param="tool_choice",
        )
    return {"type": "function", "function": {"name": named}}

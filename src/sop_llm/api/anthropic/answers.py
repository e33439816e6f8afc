"""The bodies the Anthropic-compatible routes answer with, as the OpenAPI schema shows them (api/contracts.py): the
routes build these objects themselves (replies.py), and these models only describe them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class TextBlock(BaseModel):
    type: Literal["text"]
    text: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"]
    id: str = Field(description="`toolu_…`; send it back in the `tool_result` block")
    name: str | None
    input: dict[str, Any] = Field(description="the tool's arguments")


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class AnthropicMessage(BaseModel):
    """A whole answer; with `stream: true`, Anthropic's events instead (`message_start` … `message_stop`)."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str = Field(description="the model that answered (a fallback's name when one did)")
    content: list[TextBlock | ToolUseBlock]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]
    stop_sequence: str | None
    usage: MessageUsage


class TokenCount(BaseModel):
    input_tokens: int

"""Anthropic Messages API wire models for requests. Unknown fields (`thinking`, `service_tier`, `cache_control`, …)
are tolerated, as Anthropic's clients send many; the fields the service acts on are checked.

Content blocks are one flat model whose fields depend on `type`; `conversation.py` checks each type's fields and
says what was wrong, rather than pydantic listing every member of a union.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sop_llm.providers.types import MAX_TOKENS_BOUND


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TextPart(_Tolerant):
    """A block inside `system` or inside a `tool_result`'s content: text (images are refused by type)."""

    type: str = Field(description="text")
    text: str | None = None


class ContentBlock(_Tolerant):
    type: str = Field(description="text | tool_use | tool_result (thinking blocks are skipped; others refused)")
    text: str | None = Field(None, description="text blocks")
    id: str | None = Field(None, description="tool_use blocks")
    name: str | None = Field(None, description="tool_use blocks")
    input: dict[str, Any] | None = Field(None, description="tool_use blocks: the call's arguments")
    tool_use_id: str | None = Field(None, description="tool_result blocks: the id of the tool_use answered")
    content: str | list[TextPart] | None = Field(None, description="tool_result blocks: the result")
    is_error: bool = Field(False, description="tool_result blocks: the tool failed")


class Message(_Tolerant):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(_Tolerant):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = Field(None, description="a JSON schema of the tool's input object")
    type: str | None = Field(None, description="custom (or absent); tools that Anthropic runs are refused")


class ToolChoice(_Tolerant):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, description="the tool to call, with type tool")
    disable_parallel_tool_use: bool | None = None


class Metadata(_Tolerant):
    user_id: str | None = None


class OutputFormat(_Tolerant):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema", description="the JSON schema the answer must match")


class OutputConfig(_Tolerant):
    format: OutputFormat | None = Field(None, description="structured output: the answer is JSON of this schema")
    effort: str | None = Field(None, description="accepted; not used")


class Conversation(_Tolerant):
    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextPart] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


class MessagesRequest(Conversation):
    max_tokens: int = Field(ge=1, le=MAX_TOKENS_BOUND)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    temperature: float = Field(1.0, ge=0, le=1)
    top_p: float = Field(1.0, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=100_000, description="sample from the k likeliest tokens only")
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    stream: bool = False
    fallbacks: list[str] | None = Field(None, description="non-standard: models to try in order if this one fails")


class CountTokensRequest(Conversation):
    pass

"""Ollama's request bodies. Unknown fields are tolerated, as Ollama tolerates them; the fields the service acts on are
checked here or where they are translated (conversation.py, options.py). `stream` is true when absent, as in
Ollama; `keep_alive` is read into seconds (keep_alive.py)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from sop_llm.api.ollama.keep_alive import parse_keep_alive
from sop_llm.infra.errors import BadRequestError

KeepAlive = Annotated[
    float | None,
    BeforeValidator(parse_keep_alive),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}],
            "description": 'a duration ("5m", "1h30m"), seconds, negative: forever, 0: unload after answering',
        }
    ),
]
Options = Annotated[
    dict[str, Any] | None,
    Field(description="sampling settings: temperature, top_p, top_k, min_p, seed, num_predict, stop, …"),
]


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Named(_Tolerant):
    model: str = Field(description="a model's name or alias; a `:latest` tag may follow it")

    def wanted(self) -> str:
        if not self.model:
            raise BadRequestError("model is required", param="model")
        return self.model


class ToolCallFunction(_Tolerant):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict, description="an object (or its JSON text)")
    index: int | None = None


class ToolCall(_Tolerant):
    id: str | None = None
    function: ToolCallFunction


class Message(_Tolerant):
    role: str = Field(description="system, user, assistant or tool")
    content: str | None = None
    thinking: str | None = Field(None, description="accepted; a model's earlier thinking is not passed on")
    images: list[str] | None = Field(None, description="refused: the service's models read text only")
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = Field(None, description="tool messages: the tool that answered")
    tool_call_id: str | None = Field(None, description="tool messages: the call answered")


class _Generating(_Named):
    stream: bool | None = Field(None, description="true when absent: NDJSON, one object a line")
    format: Any = Field(None, description='"json", or a JSON schema the answer must match')
    options: Options = None
    keep_alive: KeepAlive = None
    think: bool | str | None = Field(None, description="true or a level is refused: no model here thinks aloud")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    truncate: bool | None = Field(None, description="accepted; a prompt that does not fit is refused, never cut")
    shift: bool | None = Field(None, description="accepted; a prompt that does not fit is refused, never cut")

    @property
    def streaming(self) -> bool:
        return self.stream is not False


class ChatRequest(_Generating):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = Field(None, description='{"type": "function", "function": {...}} each')
    tool_choice: Any = Field(
        None, description='non-standard (as OpenAI): "auto", "none", "required" or {"type": "function", ...}'
    )


class GenerateRequest(_Generating):
    prompt: str | None = None
    system: str | None = None
    raw: bool = Field(False, description="true: the prompt is sent as it is, without the chat template")
    suffix: str | None = Field(None, description="refused when not empty: no model here fills in the middle")
    template: str | None = Field(None, description="refused when not empty: each model's own template applies")
    context: list[int] | None = Field(None, description="refused when not empty: send the conversation to /api/chat")
    images: list[str] | None = Field(None, description="refused: the service's models read text only")


class EmbedRequest(_Named):
    input: str | list[str] | None = None
    truncate: bool = Field(True, description="false: an input that might not fit is refused instead of cut")
    dimensions: int | None = Field(None, ge=1, description="keep this many leading dimensions, then normalise")
    options: Options = None
    keep_alive: KeepAlive = None

    def texts(self) -> list[str]:
        """The texts to embed: an empty string (or list) embeds nothing, as Ollama answers it."""
        if self.input is None or self.input == "":
            return []
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingsRequest(_Named):
    prompt: str | None = None
    options: Options = None
    keep_alive: KeepAlive = None


class ShowRequest(_Tolerant):
    model: str = ""
    name: str = Field("", description="deprecated: the model, as older clients send it")
    verbose: bool = Field(False, description="accepted; metadata arrays (the vocabulary) are always listed empty")

    def wanted(self) -> str:
        wanted = self.model or self.name
        if not wanted:
            raise BadRequestError("model is required", param="model")
        return wanted

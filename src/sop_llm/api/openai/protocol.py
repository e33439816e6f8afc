"""OpenAI wire models for requests. Unknown fields are tolerated (clients send many); known ones are checked."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sop_llm.infra.errors import BadRequestError, UnsupportedFeatureError
from sop_llm.providers.types import MAX_TOKENS_BOUND, SEED_MAX, SEED_MIN, ChatMessage, JsonMode

# The most choices one request may ask for (`n`); each is a generation of its own.
MAX_CHOICES = 16


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ContentPart(_Tolerant):
    type: str
    text: str | None = None


class Message(_Tolerant):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def to_chat_message(self, index: int) -> ChatMessage:
        content = self.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.type != "text" or part.text is None:
                    raise UnsupportedFeatureError(
                        f"messages[{index}].content: '{part.type}' parts are not supported; send text",
                        param=f"messages[{index}].content",
                    )
                texts.append(part.text)
            content = "".join(texts)
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role, content, self.name, self.tool_calls, self.tool_call_id)


class JsonSchemaSpec(_Tolerant):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Tolerant):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")

    def to_json_mode(self) -> JsonMode | None:
        if self.type == "text":
            return None
        if self.type == "json_schema":
            if self.json_schema is None or self.json_schema.schema_ is None:
                raise BadRequestError(
                    "response_format.json_schema.schema is required when type is json_schema",
                    param="response_format.json_schema",
                )
            return JsonMode(self.json_schema.schema_)
        return JsonMode(self.schema_)  # json_object, optionally with the non-standard `schema`


class StreamOptions(_Tolerant):
    include_usage: bool = False


class _SamplingBody(_Tolerant):
    model: str
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_BOUND)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_CHOICES, description=f"choices to generate (at most {MAX_CHOICES}); not with stream")
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, max_length=1024, description="token id -> bias (-100..100)")
    top_k: int | None = Field(None, ge=0, le=100_000, description="non-standard (as vLLM): the k likeliest tokens")
    min_p: float | None = Field(None, ge=0, le=1, description="non-standard (as vLLM): drop tokens below p × best")
    repetition_penalty: float = Field(1.0, gt=0, le=2, description="non-standard (as vLLM): 1 is none")
    fallbacks: list[str] | None = Field(None, description="non-standard: models to try in order if this one fails")

    def sampling(self) -> dict[str, Any]:
        """The GenerationRequest fields for the sampling settings beyond temperature, top_p and seed."""
        bias: dict[int, float] = {}
        for key, value in (self.logit_bias or {}).items():
            if not key.lstrip("-").isdigit() or not -100 <= value <= 100:
                raise BadRequestError(
                    f"logit_bias: '{key}': keys are token ids and biases lie in -100..100", param="logit_bias"
                )
            bias[int(key)] = value
        return {
            "top_k": self.top_k,
            "min_p": self.min_p,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty,
            "logit_bias": bias or None,
        }

    def choices(self) -> int:
        if self.n > 1 and self.stream:
            raise BadRequestError(
                "n: a stream carries one choice here; send stream: false, or n separate streaming requests",
                param="n",
            )
        return self.n

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 4:
            raise BadRequestError("stop: at most 4 sequences", param="stop")
        return stops

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingBody):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_BOUND)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def token_limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def logprob_alternatives(self) -> int | None:
        """GenerationRequest.logprobs: None, or how many alternatives to list per token."""
        if self.top_logprobs is not None and not self.logprobs:
            raise BadRequestError("top_logprobs: needs logprobs: true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_SamplingBody):
    prompt: str | list[str] | list[int] | list[list[int]]
    response_format: ResponseFormat | None = None
    logprobs: int | None = Field(None, ge=0, le=5, description="log probabilities, with this many alternatives")

    def prompt_texts(self) -> list[str]:
        """One prompt or several (each gets `n` choices); token arrays are refused."""
        prompt = self.prompt
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise BadRequestError(
                "prompt: send a string or a list of strings (token arrays are not supported)", param="prompt"
            )
        if len(prompts) * self.n > MAX_CHOICES:
            raise BadRequestError(
                f"prompt: {len(prompts)} prompts × n={self.n} choices; at most {MAX_CHOICES} per request",
                param="prompt",
            )
        if len(prompts) > 1 and self.stream:
            raise BadRequestError("prompt: a stream carries one prompt here; send stream: false", param="prompt")
        return [str(p) for p in prompts]


class EmbeddingRequest(_Tolerant):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=65_536)

    def texts(self) -> list[str]:
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and all(isinstance(item, str) for item in value):
            return [str(item) for item in value]
        if not value:
            raise BadRequestError("input must not be empty", param="input")
        raise BadRequestError(
            "input contains token ids; this server embeds text and cannot decode another model's tokens. "
            "Send the text as a string or a list of strings (LangChain: "
            "OpenAIEmbeddings(..., check_embedding_ctx_length=False))",
            param="input",
        )

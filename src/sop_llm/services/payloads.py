"""The payloads of the native API, validated in one place: the synchronous endpoints take them as request bodies,
and a background task of the same kind carries the same payload (validated when the task is accepted, parsed again
by the job that runs it), so defaults and bounds are written once."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sop_llm.infra.units import parse_duration
from sop_llm.providers.types import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    MAX_TOKENS_BOUND,
    SEED_MAX,
    SEED_MIN,
    ChatMessage,
    GenerationRequest,
    JsonMode,
)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="model name or alias; the default model when omitted")
    prompt: str | None = Field(None, description="raw prompt (completion); give this or messages")
    messages: list[Message] | None = Field(None, min_length=1)
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_TOKENS_BOUND)
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0, le=2)
    top_p: float = Field(DEFAULT_TOP_P, gt=0, le=1)
    stop: list[str] = Field(default_factory=list, max_length=8)
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    keep_alive: float | str | None = Field(
        None,
        description="local models: how long the model stays loaded after this request (seconds, or 5m, 1h; 0 "
        "unloads it once answered; negative: forever); default: the model's own keep-alive",
    )
    json_schema: dict[str, Any] | None = Field(None, description="constrain the answer to this JSON schema")
    fallbacks: list[str] | None = Field(None, description="models to try in order if this one fails")

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: float | str | None) -> float | str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> GenerateBody:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        return self

    def to_request(self) -> GenerationRequest:
        return GenerationRequest(
            messages=[ChatMessage(m.role, m.content) for m in self.messages] if self.messages else None,
            prompt=self.prompt,
            max_tokens=self.max_tokens,
            max_tokens_asked="max_tokens" in self.model_fields_set,
            keep_alive=None if self.keep_alive is None else parse_duration(self.keep_alive),
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop,
            seed=self.seed,
            json_mode=JsonMode(self.json_schema) if self.json_schema is not None else None,
        )


class EmbeddingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    texts: list[str] = Field(min_length=1)
    input_type: Literal["query", "passage"] | None = None


class SimilarityBody(BaseModel):
    """Either two texts (`text1`, `text2`) or a `query` against `candidates` with optional `top_k`."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    text1: str | None = None
    text2: str | None = None
    query: str | None = None
    candidates: list[str] | None = None
    top_k: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_form(self) -> SimilarityBody:
        pair = self.text1 is not None and self.text2 is not None
        ranked = self.query is not None and self.candidates is not None
        if pair == ranked:
            raise ValueError("give either `text1` and `text2`, or `query` and `candidates`")
        return self


class FixBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str = Field(min_length=1, max_length=100_000, description="the broken JSON, as a model wrote it")
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="a JSON Schema the result must match")
    model: str | None = Field(None, description="the fixer model; JSON_FIXER_MODEL when omitted")

"""The bodies the Ollama routes answer with, as the OpenAPI schema shows them (api/contracts.py): the routes build
these objects themselves (catalog.py, frames.py), and these models only describe them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Version(BaseModel):
    version: str = Field(description="the version of Ollama whose API this surface follows")


class ModelDetails(BaseModel):
    parent_model: str
    format: str = Field(description="`gguf`, `safetensors`, `onnx`, … (empty for a remote model)")
    family: str
    families: list[str] | None
    parameter_size: str = Field(description="e.g. `135M`, `7.6B`")
    quantization_level: str
    context_length: int | None = None
    embedding_length: int | None = None


class Tag(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int = Field(description="bytes on disk")
    digest: str
    details: ModelDetails
    capabilities: list[str] = Field(description="`completion`, `tools`, `embedding`")


class Tags(BaseModel):
    models: list[Tag]


class Running(BaseModel):
    name: str
    model: str
    size: int = Field(description="bytes the loaded model holds")
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int
    context_length: int


class RunningModels(BaseModel):
    models: list[Running]


class Shown(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str
    license: str | None = None


class ToolFunction(BaseModel):
    index: int
    name: str | None
    arguments: dict[str, Any]


class OllamaToolCall(BaseModel):
    id: str | None = None
    function: ToolFunction


class ChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    tool_calls: list[OllamaToolCall] | None = None


class _Answer(BaseModel):
    model: str = Field(description="as the request named it (or the fallback that answered)")
    created_at: str
    done: bool
    done_reason: Literal["stop", "length", "load", "unload"] | None = None
    total_duration: int | None = Field(None, description="nanoseconds, as every duration here")
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    logprobs: list[dict[str, Any]] | None = None


class ChatAnswer(_Answer):
    """A whole answer (`stream: false`); a stream has one such object a line, the last with `done: true`."""

    message: ChatMessage


class GenerateAnswer(_Answer):
    """A whole answer (`stream: false`); a stream has one such object a line, the last with `done: true`."""

    response: str


class Embed(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class LegacyEmbedding(BaseModel):
    embedding: list[float]


class PullStatus(BaseModel):
    status: str = Field(description="`success` once done; a stream's lines tell the progress before")
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

"""The bodies the OpenAI-compatible routes answer with, as the OpenAPI schema shows them (api/contracts.py): the
routes build these objects themselves, and these models only describe them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "cancelled"]

JSON_VERDICT = "with a JSON `response_format`: how the answer was obtained (`provenance`, `attempts`, `constraint`)"


class CachedTokens(BaseModel):
    cached_tokens: int = Field(description="prompt tokens served from a cached prefix")


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: CachedTokens


class FunctionCall(BaseModel):
    name: str | None
    arguments: str = Field(description="the arguments as a JSON text")


class ToolCall(BaseModel):
    id: str | None
    type: str = Field(description="`function`")
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None = Field(description="null beside tool calls when the model wrote no text")
    refusal: None
    tool_calls: list[ToolCall] | None = Field(None, description="present when the model called tools")


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]
    refusal: None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason | None
    logprobs: ChatLogprobs | None


class ChatCompletion(BaseModel):
    """A whole chat answer; with `stream: true`, `chat.completion.chunk` events instead."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str = Field(description="the model that answered (a fallback's name when one did)")
    system_fingerprint: None
    choices: list[ChatChoice]
    usage: CompletionUsage
    sop_json: dict[str, Any] | None = Field(None, description=JSON_VERDICT)


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: CompletionLogprobs | None


class TextCompletion(BaseModel):
    """A whole completion; with `stream: true`, `text_completion` events instead."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[CompletionChoice]
    usage: CompletionUsage
    sop_json: dict[str, Any] | None = Field(None, description=JSON_VERDICT)


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32 values")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelObject(BaseModel):
    id: str = Field(description="a model's name or one of its aliases")
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


class Page(BaseModel):
    """A page of a longer list: the ids of its first and last object (null when it is empty), and whether more
    follow."""

    object: Literal["list"]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Deleted(BaseModel):
    id: str
    object: str = Field(description="what was deleted: `file`, `response`")
    deleted: Literal[True]


class FileObject(BaseModel):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    expires_at: None
    filename: str
    purpose: str = Field(description="`batch` for uploads, `batch_output` for a batch's results")
    status: Literal["processed"]
    status_details: None


class FileList(Page):
    data: list[FileObject]


class BatchLineError(BaseModel):
    code: str
    message: str
    line: int | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"]
    data: list[BatchLineError]


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"]
    endpoint: str
    errors: BatchErrors | None = Field(description="the input lines that could not be read")
    input_file_id: str
    completion_window: str
    status: Literal[
        "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
    ]
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None


class BatchList(Page):
    data: list[BatchObject]


class ResponseObject(BaseModel):
    """A response (the Responses API): its output items, status and usage, and the request's settings echoed."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    background: bool
    completed_at: int | None
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    model: str
    output: list[dict[str, Any]] = Field(description="`message` and `function_call` items")
    instructions: str | None
    max_output_tokens: int | None
    max_tool_calls: None
    metadata: dict[str, Any]
    parallel_tool_calls: bool | None
    previous_response_id: str | None
    reasoning: dict[str, Any]
    service_tier: str
    store: bool
    temperature: float | None
    text: dict[str, Any]
    tool_choice: Any = Field(description="as the request sent it")
    tools: list[dict[str, Any]]
    top_p: float | None
    truncation: str
    user: str | None
    usage: dict[str, Any] | None
    sop_json: dict[str, Any] | None = Field(None, description=JSON_VERDICT)


class InputItemList(Page):
    data: list[dict[str, Any]] = Field(description="input items: messages, function calls and their outputs")

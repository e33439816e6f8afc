"""Provider-neutral request and result types shared by providers, services and the API layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "cancelled"]
# How a provider honoured a JSON request: constrained to the schema, to JSON syntax only, or not at all.
Constraint = Literal["schema", "json", "none"]


class Capability(enum.StrEnum):
    TEXT_GENERATION = "text_generation"
    CHAT = "chat"
    STREAMING = "streaming"
    FUNCTION_CALLING = "function_calling"
    JSON_SCHEMA = "json_schema"
    EMBEDDINGS = "embeddings"


class WorkClass(enum.IntEnum):
    """How urgently a generation is wanted; a lower value goes first. Interactive: an HTTP request someone waits
    on. Task: a background task's generation. Batch: a line of a Batch API batch."""

    INTERACTIVE = 0
    TASK = 1
    BATCH = 2


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """How long and how many requests may wait for a local model, and how many slots one caller may hold."""

    max_waiting: int = 64
    queue_timeout: float = 60.0
    per_caller: int = 0  # 0: no limit beyond a fair share


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class JsonMode:
    """Ask for JSON: any JSON object (schema None) or an object matching `schema`."""

    schema: dict[str, Any] | None = None


# What a generation does when the request does not say.
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.95
# Bounds every API checks before anything runs (LLM_MAX_TOKENS_PER_REQUEST then caps max_tokens further).
MAX_TOKENS_BOUND = 1_000_000
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


@dataclass(slots=True)
class GenerationRequest:
    """Either `messages` (chat) or `prompt` (raw completion)."""

    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    # The caller set max_tokens: a prompt that leaves less room than that in the model's context is refused, not
    # answered shorter. Otherwise max_tokens is a default, and the answer may use what room the prompt leaves.
    max_tokens_asked: bool = False
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    json_mode: JsonMode | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    # Report each generated token's log probability and this many most likely alternatives (None: report none).
    logprobs: int | None = None
    # Further sampling settings; None / neutral values leave the provider's own defaults.
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit
    # How long a local model stays loaded after this request, in seconds (math.inf: forever; 0: unload once
    # answered); None: the model's own keep-alive.
    keep_alive: float | None = None
    # Who asked and how urgently: a local engine shares its slots fairly between callers, interactive work first.
    caller: str | None = None
    work_class: WorkClass = WorkClass.INTERACTIVE

    def prompt_chars(self) -> int:
        if self.prompt is not None:
            return len(self.prompt)
        return sum(len(m.content or "") for m in self.messages or [])


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those taken from a cached prefix instead of evaluated

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    def as_openai_dict(self) -> dict[str, Any]:
        """OpenAI's usage object, with the prompt tokens served from a cached prefix."""
        return {**self.as_dict(), "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token: its text, its bytes (a token can be part of a UTF-8 character), its log probability
    under the model, and the most likely tokens at that position with theirs."""

    token: str
    raw: bytes
    logprob: float
    top: tuple[tuple[str, bytes, float], ...] = ()


@dataclass(slots=True)
class Chunk:
    """A piece of a streamed answer. The last chunk carries `finish_reason` and `usage`.

    `tool_calls` holds OpenAI-style tool-call deltas: `{"index", "id"?, "type"?, "function": {"name"?, "arguments"}}`;
    `id` and `name` come once per call, then `arguments` fragments follow.
    """

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: list[dict[str, Any]] | None = None
    constraint: Constraint | None = None  # on the last chunk of a JSON request
    json: Any = None  # the structured-output verdict, added to the last chunk by the JSON pipeline
    logprobs: list[TokenLogprob] | None = None  # of the tokens generated since the previous chunk, when asked


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage
    tool_calls: list[dict[str, Any]] | None = None
    constraint: Constraint | None = None  # for JSON requests: how the provider constrained the output
    logprobs: list[TokenLogprob] | None = None  # one per generated token, when asked


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""

"""The bodies the native API (`/api/v1/...`) answers with, as the OpenAPI schema shows them (api/contracts.py): the
routes build these objects themselves, and these models only describe them. Descriptions of the service's own parts
(a model's stats, a deployment's counters) are open objects: they grow with the service."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

ModelState = Literal["loading", "ready", "failed", "unloaded"]


class HealthReport(BaseModel):
    status: Literal["ok"]
    ready: bool = Field(description="whether every startup model serves")
    app: str
    version: str
    environment: str
    uptime_seconds: float
    components: dict[str, Any] = Field(description="models, cache, rate_limits and providers")


class Readiness(BaseModel):
    ready: bool
    models: dict[str, str] = Field(description="each startup model's load state")


class ModelsOverview(BaseModel):
    default_model: str | None
    default_embedding_model: str | None
    models: list[dict[str, Any]] = Field(description="every generation and embedding model: name, aliases, state, …")


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Generated(BaseModel):
    """A whole answer; with `stream: true`, `token` events, then `done` (or `error`)."""

    model: str
    text: str
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "cancelled"] | None
    usage: TokenUsage
    json_: dict[str, Any] | None = Field(
        None,
        alias="json",
        description="with `json_schema`: the answer's value and how it was obtained (provenance, attempts, constraint)",
    )


class LoadState(BaseModel):
    name: str = Field(description="the model's own name (an alias resolved)")
    state: ModelState


class PulledFile(BaseModel):
    path: str = Field(description="inside the repository")
    size: int
    sha256: str


class PulledModel(BaseModel):
    name: str
    spec: str = Field(description="what was pulled, as the pull named it")
    kind: Literal["gguf", "embedding", "rerank"]
    revision: str = Field(description="the repository's commit the files were taken from")
    size_bytes: int
    context_length: int | None
    dimensions: int | None
    pulled_at: str
    files: list[PulledFile]


class PulledModels(BaseModel):
    models: list[PulledModel]


class PulledModelDeleted(BaseModel):
    name: str
    deleted: Literal[True]
    freed_bytes: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsAnswer(BaseModel):
    model: str
    embeddings: list[list[float]]
    dimensions: int
    usage: EmbeddingUsage


class PairSimilarity(BaseModel):
    model: str
    similarity: float


class RankedCandidate(BaseModel):
    index: int
    text: str
    similarity: float


class RankedSimilarity(BaseModel):
    model: str
    results: list[RankedCandidate]


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="the document's position in the request")
    relevance_score: float
    document: RerankDocument | None = Field(None, description="with `return_documents`")


class RerankAnswer(BaseModel):
    id: str
    model: str
    results: list[RerankResult] = Field(description="most relevant first")
    usage: EmbeddingUsage


class ProviderList(BaseModel):
    providers: list[dict[str, Any]] = Field(description="each deployment: health, circuit, routing counters")


class FixedJson(BaseModel):
    value: Any = Field(description="the JSON value")
    text: str = Field(description="the value as JSON text")
    provenance: str = Field(description="`parsed`, `repaired_locally` or `fixed_by:<model>`")
    attempts: int
    history: list[dict[str, Any]]


class JsonStats(BaseModel):
    parsed: int
    repaired_locally: int
    fixed_by_model: int
    failed: int


class Webhook(BaseModel):
    attempts: int
    delivered_at: str | None
    error: str | None


class Task(BaseModel):
    id: str
    kind: str
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    result: Any = Field(description="the answer the matching synchronous endpoint would give, once completed")
    error: dict[str, Any] | None
    attempts: int
    max_attempts: int
    idempotency_key: str | None
    worker: str | None = Field(description="the process that runs (or ran) it")
    webhook: Webhook | None
    created_at: str | None
    updated_at: str | None
    started_at: str | None
    finished_at: str | None


class TaskPage(BaseModel):
    tasks: list[Task]
    total: int
    limit: int
    offset: int


class ApiKey(BaseModel):
    id: str
    name: str
    prefix: str
    scope: str
    created_at: str
    revoked_at: str | None


class NewApiKey(ApiKey):
    key: str = Field(description="the key itself: shown in this answer only")
    note: str


class ApiKeys(BaseModel):
    keys: list[ApiKey]


class ConfigReloaded(BaseModel):
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]
    restart_needed: list[str] = Field(description="what changed but takes a restart")


class Ticket(BaseModel):
    ticket: str
    expires_in: int = Field(description="seconds")


class UsageReport(BaseModel):
    object: Literal["usage"]
    data: list[dict[str, Any]] = Field(description="one row per caller, model and day")
    totals: dict[str, int]


class Budget(BaseModel):
    subject: str
    model: str
    tokens_per_day: int | None
    tokens_per_month: int | None
    used_today: int
    used_this_month: int
    day_resets_at: str
    month_resets_at: str
    updated_at: str


class Budgets(BaseModel):
    budgets: list[Budget]


class BudgetRemoved(BaseModel):
    subject: str
    model: str
    deleted: Literal[True]


class Tokenized(BaseModel):
    model: str
    tokens: list[int]
    count: int
    max_model_len: int


class Detokenized(BaseModel):
    model: str
    prompt: str


class LogEntry(BaseModel):
    id: int
    at: str = Field(description="when the request arrived (ISO 8601, UTC)")
    subject: str = Field(description="the caller: `key:<id>`, `jwt:<sub>` or `anonymous`")
    surface: Literal["openai", "anthropic", "ollama", "native", "console"]
    method: str
    route: str = Field(description="the route template, or the path when no route matched")
    model: str | None
    served_by: str | None = Field(description="the deployment that answered, when the model has several")
    status: int
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    latency_ms: float = Field(description="until the answer's last byte")
    first_token_ms: float | None = Field(description="until a stream's first chunk")
    trace_id: str = Field(description="the request's `X-Request-ID` (the trace id)")


class LogEntryDetail(LogEntry):
    request_body: str | None = Field(description="with REQUEST_LOG=full: the request body, redacted")
    response_body: str | None = Field(description="with REQUEST_LOG=full: the answer, redacted")


class LogPage(BaseModel):
    object: Literal["list"]
    data: list[LogEntry] = Field(description="newest first")
    has_more: bool
    next: str | None = Field(description="pass as `before` for the next page")

"""Typed settings read once from the environment and `.env` (names follow the seed document)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sop_llm.infra.redis_keys import TASKS_STREAM
from sop_llm.infra.units import parse_duration, parse_memory


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    app_name: str = Field("SOP LLM Service", alias="APP_NAME")
    environment: Literal["development", "staging", "production"] = Field("development", alias="ENVIRONMENT")
    debug: bool = Field(False, alias="DEBUG")

    server_host: str = Field("0.0.0.0", alias="SERVER_HOST")
    server_port: int = Field(8023, ge=1, le=65535, alias="SERVER_PORT")
    server_workers: int = Field(1, ge=1, alias="SERVER_WORKERS")

    config_dir: Path = Field(Path("config"), alias="CONFIG_DIR")

    redis_host: str = Field("localhost", alias="REDIS_HOST")
    redis_port: int = Field(6379, alias="REDIS_PORT")
    redis_password: str | None = Field(None, alias="REDIS_PASSWORD")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    redis_timeout: float = Field(0.5, gt=0, alias="REDIS_TIMEOUT")
    rate_limit_requests_per_minute: int = Field(0, ge=0, alias="RATE_LIMIT_REQUESTS_PER_MINUTE")
    rate_limit_tokens_per_minute: int = Field(0, ge=0, alias="RATE_LIMIT_TOKENS_PER_MINUTE")
    rate_limit_redis_down: Literal["local", "open", "closed"] = Field("local", alias="RATE_LIMIT_REDIS_DOWN")
    database_url: str = Field("sqlite+aiosqlite:///data/sop_llm.db", alias="DATABASE_URL")
    database_timeout: float = Field(5.0, gt=0, alias="DATABASE_TIMEOUT")
    database_auto_migrate: bool | None = Field(None, alias="DATABASE_AUTO_MIGRATE")
    tasks_concurrency: int = Field(2, ge=1, alias="TASKS_CONCURRENCY")
    tasks_lease_seconds: float = Field(30.0, gt=0, alias="TASKS_LEASE_SECONDS")
    tasks_max_attempts: int = Field(3, ge=1, le=20, alias="TASKS_MAX_ATTEMPTS")
    tasks_poll_interval: float = Field(0.5, gt=0, alias="TASKS_POLL_INTERVAL")
    tasks_redispatch_seconds: float = Field(60.0, gt=0, alias="TASKS_REDISPATCH_SECONDS")
    tasks_stream: str = Field(TASKS_STREAM, min_length=1, alias="TASKS_STREAM")
    broker_url: str | None = Field(None, alias="BROKER_URL")
    worker_heartbeat_file: Path | None = Field(None, alias="WORKER_HEARTBEAT_FILE")
    broker_timeout: float = Field(2.0, gt=0, alias="BROKER_TIMEOUT")
    auth_enabled: bool | None = Field(None, alias="AUTH_ENABLED")
    auth_allow_disabled_in_production: bool = Field(False, alias="AUTH_ALLOW_DISABLED_IN_PRODUCTION")
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256"], alias="JWT_ALGORITHMS")
    jwt_secret: SecretStr | None = Field(None, alias="JWT_SECRET")
    jwt_public_key: SecretStr | None = Field(None, alias="JWT_PUBLIC_KEY")
    jwt_issuer: str | None = Field(None, alias="JWT_ISSUER")
    jwt_audience: str | None = Field(None, alias="JWT_AUDIENCE")
    api_key_cache_seconds: float = Field(30.0, ge=0, alias="API_KEY_CACHE_SECONDS")
    metrics_public: bool | None = Field(None, alias="METRICS_PUBLIC")
    usage_enabled: bool = Field(True, alias="USAGE_ENABLED")
    usage_flush_seconds: float = Field(2.0, gt=0, le=3600, alias="USAGE_FLUSH_SECONDS")
    budget_cache_seconds: float = Field(5.0, ge=0, alias="BUDGET_CACHE_SECONDS")
    responses_ttl_days: float = Field(30.0, ge=0, alias="RESPONSES_TTL_DAYS")
    files_dir: Path = Field(Path("data/files"), alias="FILES_DIR")
    files_max_bytes: int = Field(200 * 1024 * 1024, ge=1024, alias="FILES_MAX_BYTES")
    batch_max_lines: int = Field(50_000, ge=1, alias="BATCH_MAX_LINES")
    batch_concurrency: int = Field(2, ge=1, le=64, alias="BATCH_CONCURRENCY")
    batch_line_concurrency: int = Field(4, ge=1, le=256, alias="BATCH_LINE_CONCURRENCY")
    anthropic_api_key: str | None = Field(None, alias="ANTHROPIC_API_KEY", repr=False)

    llm_default_model: str = Field("smollm2-135m", alias="LLM_DEFAULT_MODEL")
    llm_max_tokens_per_request: int = Field(2048, ge=1, alias="LLM_MAX_TOKENS_PER_REQUEST")
    llm_max_concurrent_requests: int = Field(5, ge=1, alias="LLM_MAX_CONCURRENT_REQUESTS")
    llm_max_queued_requests: int = Field(64, ge=0, alias="LLM_MAX_QUEUED_REQUESTS")
    # Batched models: slots one caller (key, token subject, client IP) may hold at once; 0 = only the fair share.
    llm_max_concurrent_per_caller: int = Field(0, ge=0, alias="LLM_MAX_CONCURRENT_PER_CALLER")
    llm_memory_threshold: float = Field(90.0, gt=0, le=100, alias="LLM_MEMORY_THRESHOLD")
    # Local models: the memory they may hold together (bytes, a size like 12GB, a percentage or share of RAM).
    model_memory_budget: str = Field("75%", alias="MODEL_MEMORY_BUDGET")
    # How long a model loaded on demand stays loaded when idle (seconds or 5m / 1h; negative: forever).
    model_keep_alive: str = Field("5m", alias="MODEL_KEEP_ALIVE")
    # How long a request waits for its model to load (then 503 with Retry-After).
    model_load_timeout: float = Field(120.0, gt=0, alias="MODEL_LOAD_TIMEOUT")
    # Where `models pull` fetches from and keeps files (huggingface_hub's own variables; unset: its defaults).
    hf_endpoint: str | None = Field(None, alias="HF_ENDPOINT")
    hf_hub_cache: Path | None = Field(None, alias="HF_HUB_CACHE")
    llm_max_prompt_chars: int = Field(32_000, ge=1, alias="LLM_MAX_PROMPT_CHARS")
    llm_max_messages: int = Field(256, ge=1, alias="LLM_MAX_MESSAGES")
    max_request_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, alias="MAX_REQUEST_BODY_BYTES")
    cors_origins: list[str] = Field(default_factory=list, alias="CORS_ORIGINS")
    webhook_allowed_hosts: list[str] = Field(default_factory=list, alias="WEBHOOK_ALLOWED_HOSTS")
    llm_request_timeout: float = Field(300.0, gt=0, alias="LLM_REQUEST_TIMEOUT")
    llm_queue_timeout: float = Field(60.0, gt=0, alias="LLM_QUEUE_TIMEOUT")

    llm_retries: int = Field(1, ge=0, le=5, alias="LLM_RETRIES")
    llm_retry_backoff: float = Field(0.25, ge=0, alias="LLM_RETRY_BACKOFF")
    llm_retry_max_wait: float = Field(10.0, ge=0, alias="LLM_RETRY_MAX_WAIT")
    circuit_failure_threshold: int = Field(5, ge=1, alias="CIRCUIT_FAILURE_THRESHOLD")
    circuit_cooldown_seconds: float = Field(30.0, gt=0, alias="CIRCUIT_COOLDOWN_SECONDS")
    health_check_interval: float = Field(30.0, gt=0, alias="HEALTH_CHECK_INTERVAL")
    health_check_timeout: float = Field(5.0, gt=0, alias="HEALTH_CHECK_TIMEOUT")

    llm_default_embedding_model: str = Field("all-minilm-l6-v2", alias="LLM_DEFAULT_EMBEDDING_MODEL")
    embedding_batch_size: int = Field(64, ge=1, alias="EMBEDDING_BATCH_SIZE")
    embedding_batch_wait_ms: float = Field(2.0, ge=0, alias="EMBEDDING_BATCH_WAIT_MS")
    embedding_max_inputs: int = Field(2048, ge=1, alias="EMBEDDING_MAX_INPUTS")
    embedding_max_queue: int = Field(8192, ge=1, alias="EMBEDDING_MAX_QUEUE")

    cache_ttl_seconds: int = Field(3600, ge=1, alias="CACHE_TTL_SECONDS")
    cache_max_items: int = Field(100_000, ge=1, alias="CACHE_MAX_ITEMS")

    json_fixer_enabled: bool = Field(True, alias="JSON_FIXER_ENABLED")
    json_fixer_model: str = Field("smollm2-135m", alias="JSON_FIXER_MODEL")
    json_fixer_max_attempts: int = Field(2, ge=1, le=5, alias="JSON_FIXER_MAX_ATTEMPTS")
    json_fixer_max_tokens: int = Field(1024, ge=16, alias="JSON_FIXER_MAX_TOKENS")
    json_fixer_token_budget: int = Field(2048, ge=16, alias="JSON_FIXER_TOKEN_BUDGET")
    json_fixer_timeout: float = Field(60.0, gt=0, alias="JSON_FIXER_TIMEOUT")

    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_format: Literal["auto", "human", "json"] = Field("auto", alias="LOG_FORMAT")
    log_file: Path | None = Field(None, alias="LOG_FILE")
    log_access: bool = Field(False, alias="LOG_ACCESS")
    # OpenTelemetry traces: exported when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set; the SDK reads
    # the other standard OTEL_* variables itself. Prompts and answers go into spans only with OTEL_CAPTURE_CONTENT.
    # OTEL_ENABLED=true turns them on without an endpoint (the SDK's default, localhost:4318); an endpoint implies it.
    otel_enabled: bool = Field(False, alias="OTEL_ENABLED")
    otel_exporter_otlp_endpoint: str | None = Field(None, alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otel_exporter_otlp_traces_endpoint: str | None = Field(None, alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    otel_service_name: str = Field("sop-llm", alias="OTEL_SERVICE_NAME")
    otel_capture_content: bool = Field(False, alias="OTEL_CAPTURE_CONTENT")

    # The request log: `metadata` keeps who, what, status, tokens and timings of every request; `full` also the
    # request and answer bodies, after redaction; `off` keeps nothing.
    request_log: Literal["off", "metadata", "full"] = Field("metadata", alias="REQUEST_LOG")
    request_log_retention_days: int = Field(30, ge=1, le=3650, alias="REQUEST_LOG_RETENTION_DAYS")
    request_log_flush_seconds: float = Field(2.0, gt=0, le=3600, alias="REQUEST_LOG_FLUSH_SECONDS")
    request_log_buffer: int = Field(50_000, ge=100, alias="REQUEST_LOG_BUFFER")
    request_log_body_limit: int = Field(16_384, ge=256, alias="REQUEST_LOG_BODY_LIMIT")
    # Regular expressions whose matches are replaced by [REDACTED] in logged bodies (and in spans' content); the
    # default catches e-mail addresses, card numbers, this service's keys, OpenAI / Anthropic keys, bearer tokens and
    # JWTs.
    request_log_redact: list[str] = Field(
        default_factory=lambda: [
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
            r"\b(?:\d[ -]?){13,19}\b",
            r"\bsop_[A-Za-z0-9_-]{16,}",
            r"\bsk-[A-Za-z0-9_-]{16,}",
            r"(?i)bearer\s+[A-Za-z0-9._~+/=-]{16,}",
            r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+",
        ],
        alias="REQUEST_LOG_REDACT",
    )

    # The admin console: a signed-in browser session lasts this long (sign-out ends it at once).
    console_session_hours: float = Field(8.0, gt=0, le=720, alias="CONSOLE_SESSION_HOURS")
    gc_tuning: bool = Field(True, alias="GC_TUNING")

    @model_validator(mode="after")
    def _memory_and_keep_alive_parse(self) -> Settings:
        parse_memory(self.model_memory_budget, 2**40)
        parse_duration(self.model_keep_alive)
        return self

    def memory_budget_bytes(self) -> int:
        import psutil

        return parse_memory(self.model_memory_budget, psutil.virtual_memory().total)

    def keep_alive_seconds(self) -> float:
        return parse_duration(self.model_keep_alive)

    @model_validator(mode="after")
    def _fixer_needs_a_model(self) -> Settings:
        if self.json_fixer_enabled and not self.json_fixer_model:
            raise ValueError("JSON_FIXER_MODEL must name a model when JSON_FIXER_ENABLED is true")
        return self

    @model_validator(mode="after")
    def _jwt_algorithms_are_pinned(self) -> Settings:
        if any(alg.lower() == "none" for alg in self.jwt_algorithms):
            raise ValueError("JWT_ALGORITHMS must not contain 'none'")
        return self

    @property
    def auth_on(self) -> bool:
        """Auth is off in development unless AUTH_ENABLED says otherwise, and on everywhere else."""
        if self.auth_enabled is None:
            return self.environment != "development"
        return self.auth_enabled

    @property
    def metrics_open(self) -> bool:
        """/metrics and the dashboard without credentials: in development unless METRICS_PUBLIC says otherwise."""
        if self.metrics_public is None:
            return self.environment == "development"
        return self.metrics_public

    @property
    def migrate_on_startup(self) -> bool:
        """Apply migrations at startup: in development unless told otherwise; elsewhere `sop-llm db upgrade`."""
        if self.database_auto_migrate is None:
            return self.environment == "development"
        return self.database_auto_migrate

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.environment == "production"
        return self.log_format == "json"

"""The request log: one row per request, newest searched first by time, caller, model or status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, Index, Integer, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sop_llm.infra.database import Base

# SQLite numbers rows itself only in an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_ID = BigInteger().with_variant(Integer, "sqlite")


class RequestLogRow(Base):
    __tablename__ = "request_log"
    __table_args__ = (
        Index("ix_request_log_at", "at"),
        Index("ix_request_log_subject_at", "subject", "at"),
        Index("ix_request_log_model_at", "model", "at"),
        Index("ix_request_log_status_at", "status", "at"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when the request arrived (UTC)
    subject: Mapped[str] = mapped_column(String(160))  # the caller: `key:<id>`, `jwt:<sub>` or `anonymous`
    surface: Mapped[str] = mapped_column(String(16))  # openai, anthropic, ollama, native, console
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(200))  # the route template (`/v1/models/{model}`), else the path
    model: Mapped[str | None] = mapped_column(String(160), nullable=True)
    served_by: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the deployment that answered
    status: Mapped[int] = mapped_column(SmallInteger)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)  # until the last byte of the answer (of a stream too)
    first_token_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # a stream's first chunk
    trace_id: Mapped[str] = mapped_column(String(128))
    request_body: Mapped[str | None] = mapped_column(Text, nullable=True)  # REQUEST_LOG=full, redacted
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)

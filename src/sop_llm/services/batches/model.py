"""The batch tables: one row per batch, and one row per request line of its input file, which carries that line's
outcome once it has one. A line's outcome is written at most once (a conditional UPDATE on `finished_at IS NULL`),
so a chunk of lines run again after a worker died cannot answer a line twice. When a batch ends its outcomes are in
its result files, and its lines' rows are deleted."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from sop_llm.infra.database import Base


class BatchStatus(enum.StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class BatchRow(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    # The caller's own key-value pairs (`metadata` is a reserved name on SQLAlchemy models).
    tags: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    # Input lines that could not be run, as OpenAI lists them: {code, message, param, line}.
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    # Lines answered with a 2xx / otherwise, kept here when the batch ends (its lines' rows are then deleted).
    completed_lines: Mapped[int] = mapped_column(Integer, default=0)
    failed_lines: Mapped[int] = mapped_column(Integer, default=0)
    # The lines are run in chunks of `chunk_lines`, each chunk one background task.
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    chunk_lines: Mapped[int] = mapped_column(Integer, default=1)
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    in_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelling_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BatchLineRow(Base):
    __tablename__ = "batch_lines"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0, 1, 2, … over the lines kept; chunks are ranges
    line: Mapped[int] = mapped_column(Integer)  # its line number in the input file (1-based, blank lines counted)
    custom_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # The request body to send; NULL for a line that could not be read (it has its error already).
    body: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

"""The task table. State changes are conditional updates (see repository.py), so they are safe across processes."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from sop_llm.infra.database import Base


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskRow(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    # Who created it (`key:<id>` or `jwt:<sub>`); NULL with auth off. Users see only their own tasks.
    owner: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Set when the task id was handed to the broker; NULL (or stale) pending rows are handed over again.
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The webhook outbox: due (and when) until a delivery succeeds; attempts bound the retries. The server default
    # is migration 0002's, which gave the rows that existed then a value.
    webhook_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    webhook_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Why the last delivery failed, or why the webhook was refused and will not be sent; NULL once delivered.
    webhook_error: Mapped[str | None] = mapped_column(String(500), nullable=True)

    __table_args__ = (
        Index("ix_tasks_status_available", "status", "available_at"),
        Index("ix_tasks_webhook_due", "webhook_due_at"),
    )

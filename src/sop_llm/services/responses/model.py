"""The stored-response table: one row per response created with `store: true`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from sop_llm.infra.database import Base


class ResponseRow(Base):
    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Who created it (`key:<id>` or `jwt:<sub>`); NULL with auth off. Only the same caller can read it.
    owner: Mapped[str | None] = mapped_column(String(160), nullable=True)
    model: Mapped[str] = mapped_column(String(160))
    status: Mapped[str] = mapped_column(String(16))
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Everything the model was given, in order, each item with an id: the items of the response this one continued
    # (its input, then its output), then this request's input. Instructions are not items and are not carried over.
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The response object exactly as it was answered (status, output, usage, the request's echoed fields).
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)  # expiry finds old ones

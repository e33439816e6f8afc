"""The file table: what is known about each uploaded or produced file. Its bytes live in a FileStore (store.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from sop_llm.infra.database import Base


class FileRow(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Who uploaded it, or whose batch produced it (`key:<id>` or `jwt:<sub>`); NULL with auth off.
    owner: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    purpose: Mapped[str] = mapped_column(String(32))  # `batch` (uploaded input) or `batch_output` (results)
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(Integer)
    lines: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

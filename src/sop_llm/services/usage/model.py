"""Usage rows (one per caller, model and UTC day, incremented in batches) and budget rows (one per caller and model,
`*` meaning every model)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from sop_llm.infra.database import Base

EVERY_MODEL = "*"


class UsageRow(Base):
    __tablename__ = "usage_daily"

    subject: Mapped[str] = mapped_column(String(160), primary_key=True)
    model: Mapped[str] = mapped_column(String(160), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True, index=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    latency_ms: Mapped[float] = mapped_column(Float)  # the sum; divided by requests when reported


class BudgetRow(Base):
    __tablename__ = "budgets"

    subject: Mapped[str] = mapped_column(String(160), primary_key=True)
    model: Mapped[str] = mapped_column(String(160), primary_key=True)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

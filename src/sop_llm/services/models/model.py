"""The pulled-model table: one row per model pulled from a hub, under the name it is served by."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypedDict

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sop_llm.infra.database import Base

# gguf: chat and generation on llama.cpp; embedding: a sentence-transformers model; rerank: a cross-encoder.
ModelKind = Literal["gguf", "embedding", "rerank"]
KINDS: tuple[ModelKind, ...] = ("gguf", "embedding", "rerank")


class PulledFile(TypedDict):
    """One file of a pulled model: its path inside the repository, its size and the sha256 of its bytes."""

    path: str
    size: int
    sha256: str


class PulledModelRow(Base):
    __tablename__ = "pulled_models"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    # What was asked for, without a hub prefix, e.g. `bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M`.
    spec: Mapped[str] = mapped_column(String(512))
    repo: Mapped[str] = mapped_column(String(255), index=True)
    revision: Mapped[str] = mapped_column(String(64))  # the commit the files were taken from
    kind: Mapped[str] = mapped_column(String(16))  # a ModelKind
    # What a provider loads: the GGUF file (the first part of a split one) or the snapshot folder.
    path: Mapped[str] = mapped_column(String(4096))
    files: Mapped[list[PulledFile]] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # Read from the files; NULL where the model does not say (or the kind has no such thing).
    architecture: Mapped[str | None] = mapped_column(String(64), nullable=True)
    context_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chat_template: Mapped[str | None] = mapped_column(Text, nullable=True)
    dimensions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pulled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

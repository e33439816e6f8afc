"""the request log

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(160), nullable=False),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("model", sa.String(160), nullable=True),
        sa.Column("served_by", sa.String(200), nullable=True),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("first_token_ms", sa.Float, nullable=True),
        sa.Column("trace_id", sa.String(128), nullable=False),
        sa.Column("request_body", sa.Text, nullable=True),
        sa.Column("response_body", sa.Text, nullable=True),
    )
    op.create_index("ix_request_log_at", "request_log", ["at"])
    op.create_index("ix_request_log_subject_at", "request_log", ["subject", "at"])
    op.create_index("ix_request_log_model_at", "request_log", ["model", "at"])
    op.create_index("ix_request_log_status_at", "request_log", ["status", "at"])


def downgrade() -> None:
    op.drop_table("request_log")

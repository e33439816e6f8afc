"""the models pulled from a model hub

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pulled_models",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("spec", sa.String(512), nullable=False),
        sa.Column("repo", sa.String(255), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("path", sa.String(4096), nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("architecture", sa.String(64), nullable=True),
        sa.Column("context_length", sa.Integer, nullable=True),
        sa.Column("chat_template", sa.Text, nullable=True),
        sa.Column("dimensions", sa.Integer, nullable=True),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_pulled_models_repo", "pulled_models", ["repo"])


def downgrade() -> None:
    op.drop_table("pulled_models")

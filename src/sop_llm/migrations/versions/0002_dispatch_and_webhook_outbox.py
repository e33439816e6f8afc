"""broker dispatch bookkeeping and the webhook outbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as table:
        table.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("webhook_due_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("webhook_sent_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_tasks_webhook_due", "tasks", ["webhook_due_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_webhook_due", table_name="tasks")
    with op.batch_alter_table("tasks") as table:
        for column in ("webhook_sent_at", "webhook_attempts", "webhook_due_at", "dispatched_at"):
            table.drop_column(column)

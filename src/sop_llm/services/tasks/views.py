from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sop_llm.services.tasks.model import TaskRow


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def task_view(row: TaskRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "result": row.result,
        "error": row.error,
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "idempotency_key": row.idempotency_key,
        "worker": row.lease_owner,
        "webhook": None
        if row.webhook_url is None
        else {
            "attempts": row.webhook_attempts,
            "delivered_at": _iso(row.webhook_sent_at),
            "error": row.webhook_error,
        },
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
    }

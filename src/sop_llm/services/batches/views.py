"""Batches and files as OpenAI's API shows them (times in Unix seconds)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sop_llm.infra.lists import openai_list
from sop_llm.services.batches.model import BatchRow
from sop_llm.services.batches.repository import Progress
from sop_llm.services.files.model import FileRow


def _unix(value: datetime | None) -> int | None:
    if value is None:
        return None
    return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())


def batch_view(row: BatchRow, progress: Progress) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": openai_list(row.errors) if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": _unix(row.created_at),
        "in_progress_at": _unix(row.in_progress_at),
        "expires_at": _unix(row.expires_at),
        "finalizing_at": _unix(row.finalizing_at),
        "completed_at": _unix(row.completed_at),
        "failed_at": _unix(row.failed_at),
        "expired_at": _unix(row.expired_at),
        "cancelling_at": _unix(row.cancelling_at),
        "cancelled_at": _unix(row.cancelled_at),
        "request_counts": {"total": row.total, "completed": progress.completed, "failed": progress.failed},
        "metadata": row.tags,
    }


def file_view(row: FileRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": _unix(row.created_at),
        "expires_at": None,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
    }

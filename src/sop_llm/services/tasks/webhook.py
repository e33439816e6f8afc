"""Webhook delivery: POST the task (as GET /api/v1/tasks/{id} shows it) to the task's URL. Deliveries are at least
once: a receiver keys on the task id (also in the `X-SOP-Task-Id` header) to ignore a repeat."""

from __future__ import annotations

import aiohttp
from loguru import logger

from sop_llm.services.tasks.model import TaskRow
from sop_llm.services.tasks.views import task_view

TIMEOUT = aiohttp.ClientTimeout(total=5)


async def deliver_webhook(row: TaskRow) -> bool:
    """True when the receiver answered 2xx."""
    if not row.webhook_url:
        return True
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.post(row.webhook_url, json=task_view(row), headers={"X-SOP-Task-Id": row.id}) as response,
        ):
            if response.status < 300:
                return True
            logger.warning("task {}: webhook answered {}", row.id, response.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        logger.warning("task {}: webhook {} failed: {!r}", row.id, row.webhook_url, exc)
    return False

"""Webhook delivery: POST the task (as GET /api/v1/tasks/{id} shows it) to the task's URL. Deliveries are at least
once: a receiver keys on the task id (also in the `X-SOP-Task-Id` header) to ignore a repeat. Every delivery
checks its destination again (webhook_guard.py) and never follows a redirect."""

from __future__ import annotations

from collections.abc import Collection

import aiohttp
from loguru import logger

from sop_llm.services.tasks.model import TaskRow
from sop_llm.services.tasks.views import task_view
from sop_llm.services.tasks.webhook_guard import GuardedResolver, WebhookRefused, check_destination

TIMEOUT = aiohttp.ClientTimeout(total=5)


async def deliver_webhook(row: TaskRow, allowed_hosts: Collection[str]) -> bool:
    """True when the receiver answered 2xx, or when there is nothing to deliver (no URL, or one that is refused
    now: retrying would not change that)."""
    if not row.webhook_url:
        return True
    try:
        await check_destination(row.webhook_url, allowed_hosts)
    except WebhookRefused as exc:
        logger.warning("task {}: webhook not sent: {}", row.id, exc)
        return True
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allowed_hosts))
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session,
            session.post(
                row.webhook_url, json=task_view(row), headers={"X-SOP-Task-Id": row.id}, allow_redirects=False
            ) as response,
        ):
            if response.status < 300:
                return True
            logger.warning("task {}: webhook answered {}", row.id, response.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        logger.warning("task {}: webhook {} failed: {!r}", row.id, row.webhook_url, exc)
    return False

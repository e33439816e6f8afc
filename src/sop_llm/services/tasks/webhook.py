"""Webhook delivery: POST the task (as GET /api/v1/tasks/{id} shows it) to the task's URL. Deliveries are at least
once: a receiver keys on the task id (also in the `X-SOP-Task-Id` header) to ignore a repeat. Every delivery
checks its destination again (webhook_guard.py), connects only to the addresses it checked, and never follows a
redirect. This module holds the aiohttp side; the task runner imports it when it first delivers, not at startup."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from loguru import logger

from sop_llm.services.tasks.model import TaskRow
from sop_llm.services.tasks.views import task_view
from sop_llm.services.tasks.webhook_guard import WebhookRefused, check_destination, host_allowed, refusal

TIMEOUT = aiohttp.ClientTimeout(total=5)


@dataclass(frozen=True, slots=True)
class Delivery:
    delivered: bool
    error: str | None = None  # why not
    final: bool = True  # False: worth another attempt later

    @classmethod
    def failed(cls, error: str) -> Delivery:
        return cls(False, error[:500], final=False)


async def deliver_webhook(row: TaskRow, allowed_hosts: Collection[str]) -> Delivery:
    """Delivered when the receiver answered 2xx. A destination refused now (a private address, say, after DNS
    changed) is final: retrying would not change that. Other failures are worth another attempt."""
    if not row.webhook_url:
        return Delivery(True)
    try:
        await check_destination(row.webhook_url, allowed_hosts)
    except WebhookRefused as exc:
        logger.warning("task {}: webhook not sent: {}", row.id, exc)
        return Delivery(False, f"refused, not sent: {exc}"[:500])
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allowed_hosts))
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session,
            session.post(
                row.webhook_url, json=task_view(row), headers={"X-SOP-Task-Id": row.id}, allow_redirects=False
            ) as response,
        ):
            if response.status < 300:
                return Delivery(True)
            logger.warning("task {}: webhook answered {}", row.id, response.status)
            return Delivery.failed(f"the receiver answered {response.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        logger.warning("task {}: webhook {} failed: {!r}", row.id, row.webhook_url, exc)
        return Delivery.failed(f"{type(exc).__name__}: {exc}")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses a webhook may go to: the delivery connects to exactly the
    addresses that were checked, so a name cannot resolve to a public address for the check and a private one for
    the connection."""

    def __init__(self, allowed_hosts: Collection[str]) -> None:
        self._allowed = allowed_hosts
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        if host_allowed(host, self._allowed):
            return results
        for result in results:
            why = refusal(ipaddress.ip_address(result["host"].split("%", 1)[0]))
            if why is not None:
                raise OSError(f"webhook to {host} refused: {result['host']} is {why}")
        return results

    async def close(self) -> None:
        await self._resolver.close()

"""Where a webhook may go. A webhook URL comes from the request, so without a guard a caller could make the service
POST to its own Redis, to a cloud metadata address or to anything else on the internal network.

Only addresses on the public internet are allowed: loopback, private, link-local (cloud metadata included),
carrier-grade NAT, multicast, unspecified and reserved addresses are refused — IPv4, IPv6 and IPv4 inside IPv6
alike — unless the URL's host is listed in WEBHOOK_ALLOWED_HOSTS. The check runs when a task is submitted (a 400
that says why) and again on every delivery, on the addresses the name resolves to at that moment, so a name that
resolves elsewhere later (DNS rebinding) is still refused. Deliveries never follow redirects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection
from urllib.parse import urlsplit

from sop_llm.infra.errors import BadRequestError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(Exception):
    """The URL may not receive webhooks; the message says why."""


def refusal(address: IPAddress) -> str | None:
    """Why `address` may not receive a webhook, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a public internet address"
    return None


def _host_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("it must be an http:// or https:// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookRefused(f"its port is invalid ({exc})") from None
    return parts.hostname.lower(), port


def host_allowed(host: str, allowed_hosts: Collection[str]) -> bool:
    return host.lower() in {h.lower().strip("[]") for h in allowed_hosts}


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


async def check_destination(url: str, allowed_hosts: Collection[str]) -> None:
    """Raise WebhookRefused unless `url` may receive webhooks now (its host allowed, or every address it resolves
    to public). Makes no connection: at most a name lookup."""
    host, port = _host_of(url)
    if host_allowed(host, allowed_hosts):
        return
    literal = _literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise WebhookRefused(f"its host '{host}' cannot be resolved ({exc.strerror or exc})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for address in addresses:
        why = refusal(address)
        if why is not None:
            shown = host if literal is not None else f"{host} ({address})"
            raise WebhookRefused(f"{shown} is {why}")


async def check_webhook_url(url: str, allowed_hosts: Collection[str]) -> None:
    """At submission: a refused URL is the caller's mistake, a 400 that says how to fix it."""
    try:
        await check_destination(url, allowed_hosts)
    except WebhookRefused as exc:
        raise BadRequestError(
            f"webhook_url: refused, {exc}; webhooks go to public addresses only, or to hosts listed in "
            "WEBHOOK_ALLOWED_HOSTS",
            param="webhook_url",
        ) from None

"""Webhook URLs come from the request, so they are checked: loopback, private, link-local, multicast, unspecified
and metadata addresses are refused at submission (400, with the reason) unless the host is allowed, and deliveries
never follow redirects. Every refusal here happens before any connection: this test only ever talks to loopback
servers it starts itself (the test server allows 127.0.0.1, its receivers' address, and nothing else)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from sop_llm.services.tasks.model import TaskRow
from sop_llm.services.tasks.webhook import GuardedResolver, deliver_webhook
from sop_llm.services.tasks.webhook_guard import WebhookRefused, check_destination
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.live_server import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.api]

TASK = {"kind": "similarity", "payload": {"text1": "a", "text2": "b"}}

REFUSED = [
    ("http://127.0.0.2:8080/hook", "loopback"),  # loopback, but not the allowed host
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),  # IPv4 inside IPv6
    ("http://localhost:9/hook", "loopback"),  # a name that resolves to loopback
    ("http://10.0.0.1/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("http://172.31.255.254/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[fd00:ec2::254]/hook", "private"),  # cloud metadata over IPv6
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://100.64.0.1/hook", "public internet"),  # carrier-grade NAT
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_a_webhook_to_a_non_public_address_is_refused_at_submission(server: LiveServer, url: str, why: str) -> None:
    reply = httpx.post(f"{server.url}/api/v1/tasks", json={**TASK, "webhook_url": url})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid_request"
    assert "webhook_url: refused" in error["message"] and why in error["message"]
    assert "WEBHOOK_ALLOWED_HOSTS" in error["message"]


def test_a_webhook_to_an_allowed_host_is_delivered(server: LiveServer) -> None:
    receiver = WebhookReceiver()
    try:
        task = httpx.post(f"{server.url}/api/v1/tasks", json={**TASK, "webhook_url": receiver.url})
        assert task.status_code == 202
        deadline = time.monotonic() + 30
        while receiver.count(task.json()["id"]) == 0:
            assert time.monotonic() < deadline, "the webhook never arrived"
            time.sleep(0.02)
    finally:
        receiver.close()


class _Server:
    """A loopback HTTP server in a thread that records the paths it is asked for and answers `status`, with a
    Location header when `location` is set."""

    def __init__(self, status: int, location: str | None = None) -> None:
        self.hits: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                owner.hits.append(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def test_a_redirect_is_never_followed(server: LiveServer) -> None:
    target = _Server(204)
    redirecting = _Server(307, location=f"http://localhost:{target.port}/stolen")
    try:
        url = f"http://127.0.0.1:{redirecting.port}/hook"
        task = httpx.post(f"{server.url}/api/v1/tasks", json={**TASK, "webhook_url": url})
        assert task.status_code == 202
        deadline = time.monotonic() + 30
        while not redirecting.hits:
            assert time.monotonic() < deadline, "the webhook never reached the redirecting receiver"
            time.sleep(0.02)
        while (shown := httpx.get(f"{server.url}/api/v1/tasks/{task.json()['id']}").json()["webhook"])["error"] is None:
            assert time.monotonic() < deadline, "the failed attempt was never recorded"
            time.sleep(0.02)
        assert target.hits == []  # the redirect to loopback was not followed
        assert shown["delivered_at"] is None  # a 307 is not a delivery
        assert shown["error"] == "the receiver answered 307"
    finally:
        target.close()
        redirecting.close()


async def test_every_delivery_checks_the_addresses_again() -> None:
    """At send time the destination is checked again, and the connection only goes to addresses that passed: a
    name that resolved to a public address at submission and to loopback now (DNS rebinding) is refused."""
    with pytest.raises(WebhookRefused, match="loopback"):
        await check_destination("http://localhost:9/hook", allowed_hosts=[])
    with pytest.raises(WebhookRefused, match="loopback"):  # the service's own Redis, when 127.0.0.1 is not allowed
        await check_destination("http://127.0.0.1:6379/", allowed_hosts=[])
    resolver = GuardedResolver(allowed_hosts=[])
    try:
        with pytest.raises(OSError, match="refused"):
            await resolver.resolve("localhost", 9)
    finally:
        await resolver.close()
    allowed = GuardedResolver(allowed_hosts=["LOCALHOST"])
    try:
        assert await allowed.resolve("localhost", 9)
    finally:
        await allowed.close()


async def test_a_webhook_refused_at_send_time_is_recorded_as_not_sent() -> None:
    row = TaskRow(id="t-1", kind="similarity", status="completed", webhook_url="http://127.0.0.1:6379/hook")
    delivery = await deliver_webhook(row, allowed_hosts=[])
    assert not delivery.delivered
    assert delivery.final  # retrying would not change it
    assert (
        delivery.error is not None and delivery.error.startswith("refused, not sent:") and "loopback" in delivery.error
    )

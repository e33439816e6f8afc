"""The dashboard in a real headless browser: Debian's Chromium driven by Playwright, while traffic flows.
The charts must redraw with new points and the counters follow the traffic, under a Content-Security-Policy that
allows no inline script or style; a screenshot is kept as an artifact
(test-artifacts/dashboard.png)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHARTS = ("chart-rate", "chart-latency", "chart-tokens", "chart-queue")


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Debian's chromium is not installed; `make test` installs it (apt-get install chromium)")
    return found


async def _until(page: Page, expression: str, seconds: float = 15.0) -> None:
    """Wait until a JavaScript expression holds. Playwright's wait_for_function evaluates its predicate with eval(),
    which the page's Content-Security-Policy refuses; page.evaluate is not subject to it."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await page.evaluate(expression):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        await asyncio.sleep(0.05)


async def _traffic(url: str, seconds: float) -> int:
    sent = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            await client.post("/api/v1/models/generate", json={"prompt": "Hi", "max_tokens": 8, "temperature": 0})
            await client.post("/api/v1/embeddings", json={"texts": [f"dashboard {sent}"]})
            sent += 2
    return sent


async def test_dashboard_draws_the_live_feed(server: LiveServer) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective));"
        )
        answer = await page.goto(f"{server.url}/dashboard")
        assert answer is not None and "script-src 'self'" in answer.headers["content-security-policy"]
        await _until(page, "Number(document.body.dataset.snapshots || 0) >= 1")
        assert await page.text_content("#status") == "live"
        images = {c: await page.eval_on_selector(f"#{c}", "c => c.toDataURL()") for c in CHARTS[:3]}
        total_before = int(await page.text_content("#total") or 0)
        snapshots_before = int(await page.evaluate("document.body.dataset.snapshots"))

        sent = await _traffic(server.url, 4.0)
        settled = max(snapshots_before + 4, int(await page.evaluate("document.body.dataset.snapshots")) + 2)
        await _until(page, f"Number(document.body.dataset.snapshots) >= {settled}")
        for chart in CHARTS:
            points = int(await page.eval_on_selector(f"#{chart}", "c => c.dataset.points"))
            assert points >= snapshots_before + 4, chart
        for chart, before in images.items():
            assert await page.eval_on_selector(f"#{chart}", "c => c.toDataURL()") != before, f"{chart} did not redraw"
        total_after = int(await page.text_content("#total") or 0)
        assert total_after >= total_before + sent
        assert "smollm2-135m" in (await page.text_content("#models") or "")
        assert "smollm2-135m" in (await page.text_content("#schedulers") or "")  # the batched engine's slots
        assert int(await page.text_content("#tokens-out") or 0) > 0
        assert await page.evaluate("window.__violations") == []  # the page needs nothing its CSP forbids
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        await browser.close()
    assert not errors, errors
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


async def test_with_auth_on_the_dashboard_asks_for_an_admin_key_and_opens_the_feed_with_a_ticket() -> None:
    secured = LiveServer(make_settings(AUTH_ENABLED=True, METRICS_PUBLIC=False)).start()
    try:
        created = subprocess.run(  # noqa: ASYNC221 - before the browser starts; nothing else runs on this loop
            [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "dashboard admin", "--scope", "admin"],
            env={
                **os.environ,
                "DATABASE_URL": secured.app.state.services.settings.database_url,
                "LOG_LEVEL": "WARNING",
            },
            capture_output=True,
            text=True,
            check=True,
        )
        admin = created.stdout.strip().splitlines()[-1]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            sockets: list[str] = []
            page.on("websocket", lambda socket: sockets.append(socket.url))
            await page.goto(f"{secured.url}/dashboard")
            await page.wait_for_selector("#login.shown", timeout=15_000)  # no key yet: the ticket was refused
            assert "authentication required" in (await page.text_content("#status") or "")
            await page.fill("#key", "sop_not-a-real-key")
            await page.click("#connect")
            await page.wait_for_selector("#login.shown", timeout=15_000)
            await page.fill("#key", admin)
            await page.click("#connect")
            await _until(page, "Number(document.body.dataset.snapshots || 0) >= 2")
            assert await page.text_content("#status") == "live"
            assert sockets and all("ticket=" in url and admin not in url for url in sockets)
            await browser.close()
    finally:
        secured.stop()

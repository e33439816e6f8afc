"""The admin console in a real headless browser (Debian's Chromium driven by Playwright) against a live server with
auth on: sign in with an admin key, make a key and give it a daily budget, send requests with it, find them in the
usage charts and the request log, revoke the key, sign out. Screenshots of every page go to
test-artifacts/console-<page>.png; the logs page's is copied to docs/images/ for the README when that is missing or
UPDATE_README_IMAGE=1."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

from tests.live_server import LiveServer, make_settings, smollm2_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
README_IMAGE = ROOT / "docs" / "images" / "console-logs.png"
MODEL = "smollm2-135m"
WAIT = 20_000  # ms: what a page may take to show what the test waits for


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Debian's chromium is not installed; `make browser` installs it (apt-get install chromium)")
    return found


def console_server(folder: Path, **overrides: object) -> LiveServer:
    """A server with auth on serving only SmolLM2; keys are checked on every request (a revoked key fails at once),
    and the request log keeps bodies and is written within a fraction of a second."""
    settings = make_settings(
        AUTH_ENABLED=True,
        METRICS_PUBLIC=False,
        CONFIG_DIR=str(smollm2_config(folder)),
        API_KEY_CACHE_SECONDS=0,
        BUDGET_CACHE_SECONDS=0,
        USAGE_FLUSH_SECONDS=0.2,
        REQUEST_LOG="full",
        REQUEST_LOG_FLUSH_SECONDS=0.2,
        **overrides,
    )
    return LiveServer(settings)


def create_admin_key(live: LiveServer) -> str:
    """An admin key made with the CLI, as an operator makes the first one."""
    created = subprocess.run(
        [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "console admin", "--scope", "admin"],
        env={**os.environ, "DATABASE_URL": live.app.state.services.settings.database_url, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


async def chat(url: str, key: str, content: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 8,
                "temperature": 0,
            },
        )


async def start_work(url: str, admin: str) -> tuple[str, str]:
    """A background task and a two-line batch, both of small generations; their ids."""
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
    lines = [{"custom_id": f"line-{n}", "method": "POST", "url": "/v1/chat/completions", "body": ask} for n in (1, 2)]
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as client:
        task = await client.post(
            "/api/v1/tasks", json={"kind": "generate", "payload": {"model": MODEL, "prompt": "Hi", "max_tokens": 4}}
        )
        assert task.status_code == 202, task.text
        upload = await client.post(
            "/v1/files",
            data={"purpose": "batch"},
            files={"file": ("lines.jsonl", "\n".join(json.dumps(line) for line in lines).encode())},
        )
        assert upload.status_code == 200, upload.text
        batch = await client.post(
            "/v1/batches", json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions"}
        )
        assert batch.status_code == 200, batch.text
    return task.json()["id"], batch.json()["id"]


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 20.0) -> None:
    """Repeat `check` (which may act, e.g. search again) until it holds; what is written lands within a flush."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def wait_for(page: Page, expression: str, seconds: float = WAIT / 1000) -> None:
    """Wait until a JavaScript expression holds in the page. Playwright's own wait_for_function evaluates its
    predicate with eval(), which the console's Content-Security-Policy refuses; page.evaluate is not subject to it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if await page.evaluate(expression):
                return
        except PlaywrightError as exc:  # the page is being replaced (sign-in and sign-out load it afresh)
            if "context was destroyed" not in exc.message:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        await asyncio.sleep(0.05)


async def sign_in(page: Page, url: str, credential: str) -> None:
    await page.goto(f"{url}/console/")
    await page.wait_for_selector("#page-signin:not([hidden])", timeout=WAIT)
    await page.fill("#credential", credential)
    await page.click("#sign-in")
    await page.wait_for_selector("#nav:not([hidden])", timeout=WAIT)


async def open_page(page: Page, name: str) -> None:
    """Go to a console page and wait until it has loaded its data (its section's data-loaded grows)."""
    loaded = await page.evaluate(f"Number(document.getElementById('page-{name}').dataset.loaded || 0)")
    await page.click(f"#nav a[data-page='{name}']")
    await wait_for(page, f"Number(document.getElementById('page-{name}').dataset.loaded || 0) > {loaded}")


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    live = console_server(tmp_path_factory.mktemp("console-config")).start()
    try:
        yield live, create_admin_key(live)
    finally:
        live.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def test_an_admin_manages_a_key_and_follows_its_usage_and_requests(
    console: tuple[LiveServer, str], browser: Browser
) -> None:
    live, admin = console
    context = await browser.new_context(viewport={"width": 1500, "height": 1000})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # A wrong credential is refused with a reason; the admin key opens the console on the live overview.
    await page.goto(f"{live.url}/console/")
    await page.wait_for_selector("#page-signin:not([hidden])", timeout=WAIT)
    await page.fill("#credential", "sop_not-a-real-key")
    await page.click("#sign-in")
    await wait_for(page, "document.getElementById('signin-message').textContent !== ''")
    assert "sign-in refused: unknown or revoked API key" in (await page.text_content("#signin-message") or "")
    await screenshot(page, "signin")
    await page.fill("#credential", admin)
    await page.click("#sign-in")
    await wait_for(page, "Number(document.getElementById('page-overview').dataset.snapshots || 0) >= 2")
    assert await page.text_content("#feed-status") == "live"
    assert MODEL in (await page.text_content("#feed-models") or "")
    assert int(await page.eval_on_selector("#chart-rate", "c => c.dataset.points")) >= 2
    await screenshot(page, "overview")

    # Keys: a new user key, shown once with a copy button, and a daily budget of 2,000 tokens for it.
    await open_page(page, "keys")
    await page.fill("#key-name", "console test key")
    await page.select_option("#key-scope", "user")
    await page.click("#key-create")
    await page.wait_for_selector("#new-key:not([hidden])", timeout=WAIT)
    key = await page.input_value("#new-key-value")
    key_id = await page.get_attribute("#new-key", "data-key-id")
    assert key.startswith("sop_") and key_id
    await page.click("#new-key-copy")
    await page.wait_for_selector("#new-key-copied:text('copied')", timeout=WAIT)
    assert await page.evaluate("navigator.clipboard.readText()") == key
    row = f"#keys tr[data-key-id='{key_id}']"
    await page.wait_for_selector(row, timeout=WAIT)
    await page.click(f"{row} button:text('Budget')")
    assert await page.input_value("#budget-subject") == f"key:{key_id}"
    await page.fill("#budget-day", "2000")
    await page.click("#budget-save")
    await page.wait_for_selector(f"#budgets tr[data-subject='key:{key_id}']", timeout=WAIT)
    assert "2,000" in (await page.text_content(f"#budgets tr[data-subject='key:{key_id}']") or "")

    # Traffic with the new key.
    for n in range(3):
        answer = await chat(live.url, key, f"console request {n}: say hi")
        assert answer.status_code == 200, answer.text

    # Its budget shows what is used of it.
    async def budget_used() -> bool:
        await open_page(page, "keys")
        used = await page.text_content(f"{row} td:nth-child(7)") or ""
        return used.endswith("/ 2,000") and not used.startswith("0 ")

    await until(budget_used, "the key's budget to show its use")
    await screenshot(page, "keys")

    # Usage: the key's tokens and requests per day, drawn, and its rows.
    await open_page(page, "usage")
    await page.select_option("#usage-key", key_id)

    async def usage_counted() -> bool:
        loaded = await page.evaluate("Number(document.getElementById('page-usage').dataset.loaded)")
        await page.click("#usage-form button[type=submit]")
        await wait_for(page, f"Number(document.getElementById('page-usage').dataset.loaded) > {loaded}")
        return int((await page.text_content("#usage-total-requests") or "0").replace(",", "")) >= 3

    await until(usage_counted, "the key's usage")
    for chart in ("chart-usage-tokens", "chart-usage-requests", "chart-usage-callers", "chart-usage-models"):
        assert int(await page.eval_on_selector(f"#{chart}", "c => c.dataset.points")) >= 1, chart
    assert f"key:{key_id}" in (await page.text_content("#usage-rows") or "")
    csv_link = await page.get_attribute("#usage-csv", "href") or ""
    assert f"key_id={key_id}" in csv_link and "format=csv" in csv_link
    await screenshot(page, "usage")

    # Logs: the key's requests, newest first, with status, tokens and latency; one opens in the detail view.
    await open_page(page, "logs")
    await page.fill("#logs-subject", f"key:{key_id}")

    async def logged() -> bool:
        loaded = await page.evaluate("Number(document.getElementById('page-logs').dataset.loaded)")
        await page.click("#logs-form button[type=submit]")
        await wait_for(page, f"Number(document.getElementById('page-logs').dataset.loaded) > {loaded}")
        return await page.locator("#logs tr").count() >= 3

    await until(logged, "the key's requests in the log")
    rows = page.locator("#logs tr")
    for index in range(3):
        cells = await rows.nth(index).locator("td").all_text_contents()
        assert cells[1] == f"key:{key_id}" and "/v1/chat/completions" in cells[3], cells
        assert cells[4] == MODEL and cells[6] == "200", cells
        prompt_tokens, completion_tokens = (int(part) for part in cells[7].split(" / "))
        assert prompt_tokens > 0 and 0 < completion_tokens <= 8, cells
        assert float(cells[8].replace(",", "")) > 0, cells
    await rows.first.click()
    await page.wait_for_selector("#log-detail:not([hidden])", timeout=WAIT)
    assert "console request 2" in (await page.text_content("#log-request-body") or "")  # newest first
    assert "trace_id" in (await page.text_content("#log-detail-fields") or "")
    image = await screenshot(page, "logs")
    if not README_IMAGE.exists() or os.environ.get("UPDATE_README_IMAGE") == "1":  # a tracked file: on request
        README_IMAGE.parent.mkdir(exist_ok=True)
        shutil.copyfile(image, README_IMAGE)

    # Models: the model unloaded and loaded again from the page, which follows it until it is ready.
    await open_page(page, "models")
    model_row = f"#models tr[data-model='{MODEL}']"
    await page.click(f"{model_row} button:text('Unload')")
    await page.click(f"{model_row} button:text('Unload')")
    await page.wait_for_selector(f"{model_row}[data-state='unloaded']", timeout=WAIT)
    await page.click(f"{model_row} button:text('Load')")
    await page.wait_for_selector(f"{model_row}[data-state='ready']", timeout=60_000)
    assert MODEL in (await page.text_content("#providers") or "")
    await screenshot(page, "models")

    # Tasks and batches: a task and a two-line batch followed to the end; the batch's output downloads with the
    # session alone.
    task_id, batch_id = await start_work(live.url, admin)
    await open_page(page, "tasks")
    await page.wait_for_selector(f"#tasks tr[data-id='{task_id}'][data-status='completed']", timeout=60_000)
    batch_row = f"#batches tr[data-id='{batch_id}']"
    await page.wait_for_selector(f"{batch_row}[data-status='completed']", timeout=60_000)
    assert "2 / 2" in (await page.text_content(batch_row) or "")
    output = await page.get_attribute(f"{batch_row} a:text('output')", "href")
    lines = await page.evaluate("(href) => fetch(href, {credentials: 'same-origin'}).then(r => r.text())", output)
    assert sorted(json.loads(line)["custom_id"] for line in lines.splitlines()) == ["line-1", "line-2"]
    await screenshot(page, "tasks")

    # Revoking the key (a second click confirms): its next request is refused.
    await open_page(page, "keys")
    await page.click(f"{row} button:text('Revoke')")
    await page.click(f"{row} button:text('Revoke')")
    await page.wait_for_selector(f"{row} td.bad", timeout=WAIT)
    assert "revoked" in (await page.text_content(f"{row} td.bad") or "")
    assert (await chat(live.url, key, "after revocation")).status_code == 401

    # Signing out ends the session: the cookie is gone, pages ask to sign in, the old cookie opens nothing.
    old = next(c["value"] for c in await context.cookies() if c["name"] == "sop_session")
    await page.click("#sign-out")
    await page.wait_for_selector("#page-signin:not([hidden])", timeout=WAIT)
    assert not [c for c in await context.cookies() if c["name"] == "sop_session"]
    await page.goto(f"{live.url}/console/#/keys")
    await page.wait_for_selector("#page-signin:not([hidden])", timeout=WAIT)
    assert await page.is_hidden("#page-keys")
    async with httpx.AsyncClient(base_url=live.url, cookies={"sop_session": old}) as client:
        assert (await client.get("/api/v1/admin/keys")).status_code == 401
        assert (await client.get("/console/session")).status_code == 401
    await context.close()
    assert not errors, errors


async def test_with_auth_off_the_console_opens_without_sign_in(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    live = LiveServer(make_settings(CONFIG_DIR=str(smollm2_config(tmp_path_factory.mktemp("open"))))).start()
    try:
        page = await browser.new_page()
        await page.goto(f"{live.url}/console/")
        await wait_for(page, "Number(document.getElementById('page-overview').dataset.snapshots || 0) >= 1")
        assert await page.is_hidden("#sign-out")  # nothing to sign out of
        assert "admin" in (await page.text_content("#who") or "")
        await open_page(page, "keys")
    finally:
        live.stop()

"""What keeps the console safe, proven against a live server and in a real browser: the session cookie's flags,
CSRF and Origin checks on cookie-authenticated changes (header-authenticated clients unaffected), HTML in a prompt
shown as text with no script run, the security headers on every console file and no CSP violation on any page, and
a user-scope session kept to its own data."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from typing import Any

import httpx
import jwt
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.integration.test_console import (
    WAIT,
    chat,
    chromium,
    console_server,
    create_admin_key,
    open_page,
    sign_in,
    until,
    wait_for,
)
from tests.live_server import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JWT_SECRET = "console-test-secret-of-at-least-32-bytes"
HOSTILE = "<img src=x onerror=alert(1)> and <script>alert(2)</script>"
PAGES = ("overview", "keys", "usage", "logs", "models", "tasks")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Collected in the page before any of its own scripts run (injected by the browser, so outside the page's CSP).
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI + " " + e.sourceFile + ":" + e.lineNumber);
});
"""


class Keys:
    def __init__(self, live: LiveServer) -> None:
        self.admin = create_admin_key(live)
        self.user, self.user_id = self._create(live, "user A")
        self.other, self.other_id = self._create(live, "user B")

    def _create(self, live: LiveServer, name: str) -> tuple[str, str]:
        made = httpx.post(
            f"{live.url}/api/v1/admin/keys",
            json={"name": name, "scope": "user"},
            headers={"Authorization": f"Bearer {self.admin}"},
        )
        assert made.status_code == 201, made.text
        return made.json()["key"], made.json()["id"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Keys]]:
    live = console_server(
        tmp_path_factory.mktemp("console-security"), JWT_SECRET=JWT_SECRET, JWT_ALGORITHMS=["HS256"]
    ).start()
    try:
        yield live, Keys(live)
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


def session_of(url: str, credential: str, **headers: str) -> tuple[httpx.Response, httpx.Client]:
    """Sign in as the console does; the client keeps the cookie."""
    client = httpx.Client(base_url=url)
    answer = client.post("/console/session", json={"credential": credential}, headers=headers)
    return answer, client


def test_the_session_cookie_is_http_only_strict_and_secure_over_https(secured: tuple[LiveServer, Keys]) -> None:
    live, keys = secured
    answer, client = session_of(live.url, keys.admin)
    assert answer.status_code == 200, answer.text
    cookie = answer.headers["set-cookie"]
    assert re.match(r"sop_session=[\w-]{40,};", cookie), cookie
    flags = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert f"max-age={8 * 3600}" in flags
    assert "secure" not in flags  # plain HTTP here: a Secure cookie would never come back
    assert answer.json()["scope"] == "admin" and len(answer.json()["csrf_token"]) >= 40
    client.close()
    behind_tls, client = session_of(live.url, keys.admin, **{"X-Forwarded-Proto": "https"})
    assert "secure" in [part.strip().lower() for part in behind_tls.headers["set-cookie"].split(";")]
    client.close()
    wrong, client = session_of(live.url, "sop_wrong-key")
    assert wrong.status_code == 401
    assert "sign-in refused" in wrong.json()["error"]["message"] and "set-cookie" not in wrong.headers
    client.close()


def test_a_cookie_authenticated_change_needs_the_csrf_token_and_this_origin(secured: tuple[LiveServer, Keys]) -> None:
    live, keys = secured
    answer, client = session_of(live.url, keys.admin)
    csrf = answer.json()["csrf_token"]
    body = {"name": "made by a cookie", "scope": "user"}
    try:
        assert client.get("/api/v1/admin/keys").status_code == 200  # reading needs only the cookie
        missing = client.post("/api/v1/admin/keys", json=body, headers={"Origin": live.url})
        assert missing.status_code == 403
        assert "CSRF token" in missing.json()["error"]["message"]
        wrong = client.post("/api/v1/admin/keys", json=body, headers={"X-CSRF-Token": "guessed"})
        assert wrong.status_code == 403
        foreign = client.post(
            "/api/v1/admin/keys", json=body, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        assert "another origin" in foreign.json()["error"]["message"]
        sandboxed = client.post("/api/v1/admin/keys", json=body, headers={"X-CSRF-Token": csrf, "Origin": "null"})
        assert sandboxed.status_code == 403
        # A form another site posts carries no token either.
        form = client.post(
            "/api/v1/admin/keys",
            content=b"name=x&scope=admin",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"},
        )
        assert form.status_code == 403
        assert client.delete("/console/session").status_code == 403  # sign-out is a change too
        assert (
            client.post(
                "/console/session", json={"credential": keys.admin}, headers={"Origin": "https://evil.example"}
            ).status_code
            == 403
        )
        # The same request from the console's own page passes, so the refusals above are the checks at work.
        made = client.post("/api/v1/admin/keys", json=body, headers={"X-CSRF-Token": csrf, "Origin": live.url})
        assert made.status_code == 201, made.text
        # Behind a proxy that ends TLS and names the public host in X-Forwarded-Host, the page's origin is that host.
        proxied = client.post(
            "/api/v1/admin/keys",
            json=body,
            headers={"X-CSRF-Token": csrf, "Origin": "https://llm.example.com", "X-Forwarded-Host": "llm.example.com"},
        )
        assert proxied.status_code == 201, proxied.text
        assert client.get("/console/session").headers["cache-control"] == "no-store"
    finally:
        client.close()
    # A client that sends its key in a header has no cookie to be abused with: nothing more is asked of it.
    direct = httpx.post(
        f"{live.url}/api/v1/admin/keys",
        json=body,
        headers={"Authorization": f"Bearer {keys.admin}", "Origin": "https://evil.example"},
    )
    assert direct.status_code == 201, direct.text


def test_security_headers_on_every_console_page_and_file(secured: tuple[LiveServer, Keys]) -> None:
    live, _ = secured
    folder = resources.files("sop_llm.api").joinpath("static/console")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith((".js", ".css")))
    assert {"app.js", "logs.js", "console.css", "dashboard.js", "dashboard.css"} <= set(names)
    # Nothing inline for the policy to refuse: every script is a file, no handler attribute, no style attribute
    # (the dashboard's page, which uses two of the console's files, neither).
    for page in (folder.joinpath("index.html"), resources.files("sop_llm.api").joinpath("static/dashboard.html")):
        html = page.read_text(encoding="utf-8")
        assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", html))
        assert not re.search(r"\son[a-z]+\s*=", html) and not re.search(r"\sstyle\s*=", html) and "<style" not in html
    for path in ["/console/", *(f"/console/static/{name}" for name in names)]:
        answer = httpx.get(live.url + path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CSP, path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "no-referrer", path
        assert answer.headers["x-frame-options"] == "DENY", path
        if path == "/console/":
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["content-type"].startswith("text/html")
        else:
            assert answer.headers["content-type"].startswith(("text/javascript", "text/css")), path
    assert httpx.get(f"{live.url}/console/static/..%2Fdashboard.html").status_code == 404


async def watched(browser: Browser) -> tuple[BrowserContext, Page, list[str], list[str]]:
    """A page that records CSP violations, script errors, console errors and dialogs."""
    context = await browser.new_context(viewport={"width": 1500, "height": 1000})
    await context.add_init_script(WATCH)
    page = await context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console_error(message: Any) -> None:
        # The browser logs every HTTP error answer ("Failed to load resource"), the 401 that says "not signed in"
        # included; anything else at error level (a refused script or style, an exception) counts.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", console_error)

    async def refuse(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", refuse)
    return context, page, errors, dialogs


async def test_every_page_runs_under_the_policy_without_a_violation(
    secured: tuple[LiveServer, Keys], browser: Browser
) -> None:
    live, keys = secured
    context, page, errors, _ = await watched(browser)
    await sign_in(page, live.url, keys.admin)
    await wait_for(page, "Number(document.getElementById('page-overview').dataset.snapshots || 0) >= 1")
    for name in PAGES[1:]:
        await open_page(page, name)
    assert await page.evaluate("window.__violations") == []
    assert not errors, errors
    await context.close()


async def test_html_in_a_prompt_shows_as_text_and_runs_nothing(
    secured: tuple[LiveServer, Keys], browser: Browser
) -> None:
    live, keys = secured
    sent = await chat(live.url, keys.user, HOSTILE)
    assert sent.status_code == 200, sent.text
    context, page, errors, dialogs = await watched(browser)
    await sign_in(page, live.url, keys.admin)
    await open_page(page, "logs")
    await page.fill("#logs-subject", f"key:{keys.user_id}")

    async def logged() -> bool:
        await open_page(page, "logs")
        return await page.locator("#logs tr").count() >= 1

    await until(logged, "the hostile request in the log")
    await page.locator("#logs tr").first.click()
    await page.wait_for_selector("#log-detail:not([hidden])", timeout=WAIT)
    shown = await page.text_content("#log-request-body") or ""
    assert "<img src=x onerror=alert(1)>" in shown and "<script>alert(2)</script>" in shown
    assert await page.get_by_text("<script>alert(2)</script>", exact=False).first.is_visible()
    assert await page.locator("main img, main script").count() == 0  # no element was made of the text
    assert dialogs == []
    assert await page.evaluate("window.__violations") == []
    assert not errors, errors
    await context.close()


async def test_a_user_scope_session_sees_its_own_rows_and_no_admin_action(
    secured: tuple[LiveServer, Keys], browser: Browser
) -> None:
    live, keys = secured
    for key in (keys.user, keys.other):
        assert (await chat(live.url, key, "whose row is this")).status_code == 200
    context, page, errors, _ = await watched(browser)
    await sign_in(page, live.url, keys.user)
    await wait_for(page, "document.body.dataset.page === 'usage'")  # a user lands on its usage
    for name in ("overview", "keys", "models", "tasks"):
        assert await page.locator(f"#nav a[data-page='{name}']").count() == 0, name
    assert await page.locator("[data-admin]").count() == 0  # the caller filters are admins' too

    async def own_rows() -> bool:
        await open_page(page, "logs")
        return await page.locator("#logs tr").count() >= 1

    await until(own_rows, "the user's rows in the log")
    callers = set(await page.locator("#logs tr td:nth-child(2)").all_text_contents())
    assert callers == {f"key:{keys.user_id}"}, callers
    await page.goto(f"{live.url}/console/#/keys")  # an admin page by its address: back to the user's usage
    await wait_for(page, "document.body.dataset.page === 'usage'")

    cookie = next(c for c in await context.cookies() if c["name"] == "sop_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert await page.evaluate("document.cookie") == ""  # out of the page's scripts' reach
    async with httpx.AsyncClient(base_url=live.url, cookies={"sop_session": cookie["value"]}) as client:
        assert (await client.get("/api/v1/logs", params={"subject": f"key:{keys.other_id}"})).status_code == 403
        assert (await client.get("/api/v1/admin/keys")).status_code == 403
        own = (await client.get("/api/v1/logs")).json()["data"]
        assert own and {row["subject"] for row in own} == {f"key:{keys.user_id}"}
        session = (await client.get("/console/session")).json()
        refused = await client.post(
            "/api/v1/admin/keys",
            json={"name": "escalate", "scope": "admin"},
            headers={"X-CSRF-Token": session["csrf_token"], "Origin": live.url},
        )
        assert refused.status_code == 403
    assert not errors, errors
    await context.close()


def test_a_session_ends_when_the_key_that_opened_it_is_revoked(secured: tuple[LiveServer, Keys]) -> None:
    live, keys = secured
    made = httpx.post(
        f"{live.url}/api/v1/admin/keys",
        json={"name": "revoked while signed in", "scope": "admin"},
        headers={"Authorization": f"Bearer {keys.admin}"},
    ).json()
    answer, client = session_of(live.url, made["key"])
    try:
        assert answer.status_code == 200
        assert client.get("/api/v1/admin/keys").status_code == 200
        revoked = httpx.delete(
            f"{live.url}/api/v1/admin/keys/{made['id']}", headers={"Authorization": f"Bearer {keys.admin}"}
        )
        assert revoked.status_code == 200
        assert client.get("/api/v1/admin/keys").status_code == 401  # API_KEY_CACHE_SECONDS=0 here: at once
        assert client.get("/console/session").status_code == 401
    finally:
        client.close()


def test_an_admin_jwt_signs_in_for_no_longer_than_the_token_lives(secured: tuple[LiveServer, Keys]) -> None:
    live, _ = secured
    token = jwt.encode({"sub": "ops", "scope": "admin", "exp": int(time.time()) + 120}, JWT_SECRET, algorithm="HS256")
    answer, client = session_of(live.url, token)
    try:
        assert answer.status_code == 200, answer.text
        assert answer.json()["subject"] == "jwt:ops" and answer.json()["scope"] == "admin"
        max_age = re.search(r"Max-Age=(\d+)", answer.headers["set-cookie"], re.IGNORECASE)
        assert max_age is not None and 60 < int(max_age.group(1)) <= 120  # the token's 2 minutes, not 8 hours
        assert client.get("/api/v1/admin/keys").status_code == 200
    finally:
        client.close()

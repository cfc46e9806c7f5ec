"""The bus's Redis client sends a command without an asyncio Task of its own (issue 10:
redis-py's ``wait_for`` around every write made one per command on Python 3.11)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

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


async def test_taking_a_pooled_connection_costs_no_turn_of_the_loop(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py checks every connection it takes from the pool for unread data by reading
    with a zero timeout: a timer, a future and a turn of the event loop per command. What
    arrived is in the stream's buffer already, so the check looks there (issue 10)."""
    redis = create_redis(redis_server.url, client_name="test")
    loop = asyncio.get_running_loop()
    zero_timeouts = 0
    call_soon = loop.call_soon

    def counted(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        nonlocal zero_timeouts
        if getattr(callback, "__qualname__", "") == "Timeout._on_timeout":
            zero_timeouts += 1
        return call_soon(callback, *args, **kwargs)

    try:
        await redis.set("k", "v")  # connected
        monkeypatch.setattr(loop, "call_soon", counted)
        for _ in range(20):
            assert await redis.get("k") == "v"
    finally:
        monkeypatch.undo()
        await redis.aclose()
    assert zero_timeouts == 0


async def test_a_pooled_connection_with_an_unread_reply_is_not_used(
    redis_server: RedisServer,
) -> None:
    """A connection given back with a reply still unread (or closed by the server) is
    replaced, never read from: the next command gets its own answer."""
    redis = create_redis(redis_server.url, client_name="test")
    try:
        await redis.set("k", "v")
        pool = redis.connection_pool
        conn = await pool.get_connection()
        await conn.send_command("PING")  # its +PONG is never read
        stream = conn._parser._stream
        while not stream._buffer:  # noqa: ASYNC110 (the reply arrived and waits in the buffer)
            await asyncio.sleep(0.001)
        await pool.release(conn)
        assert await redis.get("k") == "v"

        conn = await pool.get_connection()
        await conn.send_command("CLIENT", "ID")
        client_id = await conn.read_response()
        await redis.client_kill_filter(_id=client_id)  # the server closes it
        stream = conn._parser._stream
        while not stream.at_eof():  # noqa: ASYNC110 (the server's close arrived)
            await asyncio.sleep(0.001)
        await pool.release(conn)
        assert await redis.get("k") == "v"
    finally:
        await redis.aclose()

"""The sharded feed on one Redis 7 (SSUBSCRIBE works there): what a cluster needs of it
that a single node can show. Refusals are misconfiguration, never a silent dead feed."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from bus.chatlog import ChatLog
from bus.client import create_redis
from bus.errors import BusUnavailable, misconfigurations
from bus.keys import BusKeys
from bus.pubsub import ChatFeed
from demo.launcher import redis_major
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

KEYS = BusKeys("shard", cluster=True)
QUEUED = '{"type":"workerState","state":"queued"}'


async def test_an_acl_without_ssubscribe_is_counted_as_misconfigured(
    redis_server: RedisServer,
) -> None:
    """NOPERM on SSUBSCRIBE: logged and counted as bus.misconfigured (kind NOPERM), the
    listener is refused, the chat waits for a subscription and the feed keeps trying."""
    if redis_major(redis_server.binary) < 7:
        pytest.skip("sharded pub/sub needs redis-server >= 7")
    admin = create_redis(redis_server.url, client_name="admin")
    await admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "nosub", "on", ">pw", "~*", "&*", "+@all", "-ssubscribe"
    )
    redis = create_redis(f"redis://nosub:pw@127.0.0.1:{redis_server.port}/0", client_name="feed")
    feed = ChatFeed(redis, KEYS, ChatLog(redis, KEYS), confirm_timeout=1)
    assert feed.sharded
    before = misconfigurations()["NOPERM"]
    feed.start()
    try:
        with pytest.raises(BusUnavailable):  # the confirmation never came
            await feed.open_listener("refused")
        await wait_until(
            lambda: misconfigurations()["NOPERM"] > before, timeout=10, message="the count"
        )
        await wait_until(lambda: feed.homeless == 1, timeout=10, message="the chat to wait")
        assert feed.connected  # Redis answers: not an outage
        assert feed.reconnects >= 1
        await admin.execute_command("ACL", "SETUSER", "nosub", "+ssubscribe")  # type: ignore[no-untyped-call]
        await wait_until(lambda: not feed.homeless, timeout=15, message="the feed to recover")
        async with feed.listen("refused") as listener:  # the feed kept trying: it follows it
            event_id = await feed.log.append_event("refused", QUEUED)
            record = await asyncio.wait_for(listener.get(), 10)
        assert record.event_id == event_id
    finally:
        await feed.close()
        await redis.aclose()
        await admin.aclose()


async def test_a_chat_taken_back_before_its_unsubscription_ran_is_confirmed_again(
    redis_server: RedisServer,
) -> None:
    """The linger ran out (the chat is forgotten, its unsubscription a task not run yet) and
    a socket takes the chat back at once: the feed must subscribe it again and get a new
    confirmation, not take the chat for subscribed and leave the socket waiting."""
    if redis_major(redis_server.binary) < 7:
        pytest.skip("sharded pub/sub needs redis-server >= 7")
    redis = create_redis(redis_server.url, client_name="feed")
    feed = ChatFeed(redis, KEYS, ChatLog(redis, KEYS), linger_seconds=60, confirm_timeout=2)
    feed.start()
    try:
        async with feed.listen("back"):
            pass  # lingering now
        feed._expire("back", feed._chats["back"])  # the linger ran out
        async with feed.listen("back") as listener:  # taken back before the task ran
            event_id = await feed.log.append_event("back", QUEUED)
            record = await asyncio.wait_for(listener.get(), 10)
        assert record.event_id == event_id
    finally:
        await feed.close()
        await redis.aclose()


async def test_a_node_connection_does_not_run_in_the_context_of_the_socket_that_opened_it(
    redis_server: RedisServer,
) -> None:
    """The first socket of a node opens its connection; the connection's reader must not
    inherit that socket's context (its request id would label every later feed log)."""
    if redis_major(redis_server.binary) < 7:
        pytest.skip("sharded pub/sub needs redis-server >= 7")
    request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rid", default=None)
    redis = create_redis(redis_server.url, client_name="feed")
    feed = ChatFeed(redis, KEYS, ChatLog(redis, KEYS))
    shards: Any = feed._shards
    seen: list[str | None] = []
    confirm = shards._on_confirmed

    async def confirmed(channel: str) -> None:
        seen.append(request_id.get())  # runs in the connection's reader task
        await confirm(channel)

    shards._on_confirmed = confirmed
    feed.start()

    async def socket() -> None:
        request_id.set("socket-1")
        async with feed.listen("ctx"):
            pass

    try:
        await wait_until(lambda: feed.connected, timeout=10, message="the feed to start")
        await asyncio.create_task(socket())
    finally:
        await feed.close()
        await redis.aclose()
    assert seen == [None]

"""A feed connection whose Redis hangs (SIGSTOP: alive, sockets open, answers nothing) ends.

The feed notices a silent connection with its watchdog (a ping, then ``DEAD_AFTER`` seconds
without an answer). Here Redis hangs at the worst moment: while the feed reads the chat's
log for a subscription's confirmation, through a client that waits for ever (no socket
timeout). That read must not hold the connection: the silent link ends within the
watchdog's bound, its chat waits for its node again, the watchdog says so once (not at
every tick), and once Redis answers again the chat is subscribed and followed.

Both feeds, on one Redis 7: the sharded one (SSUBSCRIBE works there too) runs its cluster
code with one node, the classic one (SUBSCRIBE) its single connection. Before, both waited
in the log read: the connection never ended and bus.feed_silent came at every tick. The
cluster tests (test_feed_sharded.py) hang a master whose replica takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import AsyncIterator

import pytest

from bus import pubsub, slot_map
from bus.chatlog import ChatLog
from bus.client import RedisOptions, create_redis
from bus.keys import BusKeys
from bus.pubsub import ChatFeed
from bus.slot_map import ClusterSlots
from demo.launcher import redis_major
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration]

QUEUED = '{"type":"workerState","state":"queued"}'
KEYS_SHARDED = BusKeys("hung", 16, cluster=True)


class HangAtConfirmation:
    """Stops Redis when the feed reads a chat's log to confirm its subscription."""

    def __init__(self, log: ChatLog, server: RedisServer) -> None:
        assert server.proc is not None
        self.proc = server.proc
        self.real = log.last_event_id
        self.stopped = asyncio.Event()
        self.resumed = False

    async def last_event_id(self, chat_id: str) -> str | None:
        if not self.stopped.is_set():
            self.stopped.set()
            self.proc.send_signal(signal.SIGSTOP)
        return await self.real(chat_id)

    def resume(self) -> None:
        if self.stopped.is_set() and not self.resumed:
            self.resumed = True
            self.proc.send_signal(signal.SIGCONT)


@contextlib.asynccontextmanager
async def hanging_feed(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch, keys: BusKeys
) -> AsyncIterator[tuple[ChatFeed, HangAtConfirmation]]:
    monkeypatch.setattr(pubsub, "PING_INTERVAL", 0.1)
    monkeypatch.setattr(pubsub, "DEAD_AFTER", 0.5)
    # Log reads wait for ever on a hung Redis: only the feed can bound what they hold up.
    options = RedisOptions(socket_timeout=None, retries=0, health_check_interval=0)
    redis = create_redis(server.url, client_name="hung-test", options=options)
    log = ChatLog(redis, keys)
    feed = ChatFeed(redis, keys, log, linger_seconds=0, confirm_timeout=60)
    hang = HangAtConfirmation(log, server)
    monkeypatch.setattr(log, "last_event_id", hang.last_event_id)
    feed.start()
    try:
        yield feed, hang
    finally:
        hang.resume()
        await feed.close()
        await redis.aclose()


@pytest.mark.parametrize("sharded", [True, False], ids=["sharded", "classic"])
async def test_a_node_that_hangs_during_a_confirmation_read_loses_its_link(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    sharded: bool,
) -> None:
    binary = redis_server_binary()
    if binary is None or redis_major(binary) < 7:
        pytest.skip("needs redis-server >= 7 (SSUBSCRIBE)")
    caplog.set_level(logging.WARNING, logger="bus.pubsub")
    keys = BusKeys("hung", 16, cluster=sharded)
    async with hanging_feed(redis_server, monkeypatch, keys) as (feed, hang):
        await wait_until(lambda: feed.connected, timeout=10, message="the feed's first answer")
        opening = asyncio.create_task(feed.open_listener("hung-chat"))
        try:
            await asyncio.wait_for(hang.stopped.wait(), 10)  # the confirmation read started
            # The link to the hung node ends though the confirmation read still waits.
            await wait_until(
                lambda: feed.reconnects >= 1, timeout=10, message="the silent link to end"
            )
            assert not opening.done()  # not confirmed: the listener waits for its node
            silent = [r for r in caplog.records if r.getMessage() == "bus.feed_silent"]
            assert len(silent) == 1, "the watchdog reports a silence once"
            hang.resume()
            listener = await asyncio.wait_for(opening, 30)  # confirmed once Redis answers
        finally:
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
        try:
            event_id = await feed.log.append_event("hung-chat", QUEUED)
            record = await asyncio.wait_for(listener.get(), 10)
            assert record.event_id == event_id
        finally:
            feed.close_listener(listener)


async def test_a_node_that_did_not_answer_is_asked_for_the_slot_map_last(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every refresh of the feed's slot map used to ask the nodes in a fresh random order, a
    hung one (often the node whose link was just lost) as likely first as before: each time
    a QUERY_TIMEOUT. Once it failed, it is asked after every other node."""
    accepted = 0
    writers: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writers.append(writer)  # open, silent: a SIGSTOPped node

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = f"127.0.0.1:{port}"
    monkeypatch.setattr(slot_map, "QUERY_TIMEOUT", 0.2)
    # The "random" order puts the hung node first every time.
    monkeypatch.setattr(random, "shuffle", lambda nodes: nodes.sort(key=hung.__ne__))
    options = RedisOptions(seeds=(("127.0.0.1", port),))
    client = create_redis(redis_cluster.url, client_name="hung-test", options=options, cluster=True)
    try:
        slots = ClusterSlots(client)  # type: ignore[arg-type]
        for _ in range(5):
            await slots.refresh()
            assert slots.node_of(KEYS_SHARDED.chat_channel("c")) is not None
    finally:
        await client.aclose()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
    assert accepted == 1  # asked first once, then last (never reached: another answered)

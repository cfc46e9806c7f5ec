"""The live feed under socket churn: subscriptions come and go while the reader reads.

The guarantee checker's long mode saw WebSocket handlers fail with ``RuntimeError: read()
called while another coroutine is already waiting for incoming data`` (a 500). A socket's
task sent SUBSCRIBE on the feed's pub/sub connection through redis-py, which pings and
reads the answer first when no channel is subscribed and the health check is due (and
reconnects, reading the handshake, when the connection dropped), while the feed's reader
task was blocked reading the same stream: two readers on one connection.

Each test runs with the classic subscription (SUBSCRIBE on one connection), in the legacy
and the partitioned key layout, and with the sharded one a cluster uses (scripts SPUBLISH,
SSUBSCRIBE on a connection per node: here the one node).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest

from bus import pubsub
from bus.chatlog import ChatLog
from bus.client import RedisOptions, create_redis
from bus.keys import BusKeys
from bus.pubsub import ChatFeed
from demo.launcher import redis_major
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until

QUEUED = '{"type":"workerState","state":"queued"}'


@pytest.fixture(params=["classic", "partitioned", "sharded"])
async def feed(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[ChatFeed]:
    if request.param == "sharded" and redis_major(redis_server.binary) < 7:
        pytest.skip("sharded pub/sub needs redis-server >= 7")
    # A health check due 0.2 s after each read: due while the reader waits (1 s) for the next.
    options = RedisOptions(health_check_interval=0.2)  # type: ignore[arg-type]
    redis = create_redis(redis_server.url, client_name="churn", options=options)
    partitions = 4 if request.param == "partitioned" else 1  # REDIS_PARTITIONS on one Redis
    keys = BusKeys("churn", partitions, cluster=request.param == "sharded")
    feed = ChatFeed(redis, keys, ChatLog(redis, keys), linger_seconds=0)
    assert feed.sharded == keys.cluster
    feed.start()
    try:
        await wait_until(lambda: feed.connected, timeout=10, message="the feed to connect")
        yield feed
    finally:
        await feed.close()
        await redis.aclose()


async def _delivers(feed: ChatFeed, chat_id: str) -> None:
    async with feed.listen(chat_id) as listener:
        event_id = await feed.log.append_event(chat_id, QUEUED)
        record = await asyncio.wait_for(listener.get(), 10)
    assert record.event_id == event_id


async def test_a_socket_subscribing_to_an_idle_feed_never_reads_its_connection(
    feed: ChatFeed,
) -> None:
    failures: list[Exception] = []
    for n in range(6):  # one socket at a time: nothing subscribed between them
        try:
            await _delivers(feed, f"chat-{n}")
        except Exception as exc:
            failures.append(exc)
        await asyncio.sleep(0.4)  # idle past the health check's due time
    assert failures == []
    assert feed.reconnects == 0


async def test_sockets_churning_while_the_connection_drops_all_get_their_events(
    feed: ChatFeed, redis_server: RedisServer
) -> None:
    failures: list[Exception] = []

    async def socket(n: int) -> None:
        for round_ in range(8):
            try:
                await _delivers(feed, f"chat-{n}-{round_}")
            except Exception as exc:
                failures.append(exc)
            await asyncio.sleep(0.05 * (n % 7))

    killed = 0
    sockets_done = asyncio.Event()

    async def sockets() -> None:
        await asyncio.gather(*(socket(n) for n in range(30)))
        sockets_done.set()

    async def drop_the_feed_connection() -> None:
        """Kill the feed's subscribed connections every 0.2 s while the sockets churn."""
        nonlocal killed
        admin = create_redis(redis_server.url, client_name="admin")
        try:
            while not sockets_done.is_set():
                await asyncio.sleep(0.2)
                killed += await admin.client_kill_filter(_type="pubsub")
        finally:
            await admin.aclose()

    async with feed.listen("anchor"):  # keeps the connection subscribed: every kill hits
        await asyncio.gather(sockets(), drop_the_feed_connection())

    assert failures == []
    assert killed >= 1
    assert feed.reconnects >= 1
    await _delivers(feed, "after")


async def test_a_silent_feed_connection_is_dropped_and_followed_again(
    feed: ChatFeed, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed reads without a timeout: its watchdog pings, and drops a connection that
    stays silent, so a dead peer is noticed and every chat is backfilled after it."""
    monkeypatch.setattr(pubsub, "PING_INTERVAL", 0.1)
    monkeypatch.setattr(pubsub, "DEAD_AFTER", 0.5)
    async with feed.listen("quiet") as listener:
        assert redis_server.proc is not None
        redis_server.proc.send_signal(signal.SIGSTOP)  # alive, but answers nothing
        try:
            await wait_until(lambda: not feed.connected, timeout=10, message="the feed to drop")
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        await wait_until(lambda: feed.connected, timeout=15, message="the feed to reconnect")
        event_id = await feed.log.append_event("quiet", QUEUED)
        record = await asyncio.wait_for(listener.get(), 10)
    assert record.event_id == event_id
    assert feed.reconnects >= 1


async def test_events_in_sequence_take_no_log_path(
    feed: ChatFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event whose predecessor the chat saw last is dispatched as it is read: no hand-over
    to the log worker, no timer (issue 10: the hung-Redis fix had routed every event
    through a queue and a task under a log-read timeout). An event after a gap still
    takes the log path, which backfills what the chat missed, in order."""
    slow: list[str] = []
    on_message = feed._on_message

    async def counted(channel: str, data: str) -> None:
        slow.append(data.split(" ", 2)[1])
        await on_message(channel, data)

    monkeypatch.setattr(feed, "_on_message", counted)
    if feed._shards is not None:  # the links call the feed's method they were given
        monkeypatch.setattr(feed._shards, "_on_message", counted)
    async with feed.listen("steady") as listener:
        sent = [await feed.log.append_event("steady", QUEUED) for _ in range(30)]
        got = [(await asyncio.wait_for(listener.get(), 10)).event_id for _ in sent]
        assert got == sent
        assert slow == []

        # A gap: an event published with a predecessor the feed never saw.
        chat = feed._chats["steady"]
        chat.last_id = sent[-3]  # as if the last two had been lost on the way
        newest = await feed.log.append_event("steady", QUEUED)
        got = [(await asyncio.wait_for(listener.get(), 10)).event_id for _ in range(3)]
    assert got == [*sent[-2:], newest]
    assert slow == [newest]

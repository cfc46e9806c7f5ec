"""The live feed's subscription confirmation and the first events of a new chat (fakeredis).

A chat's first events may be appended after Redis applied the SUBSCRIBE but before the feed
reads the chat's position for the confirmation: the position already counts them while their
pub/sub copies are still buffered. Those copies are duplicates, not a new log.
"""

from __future__ import annotations

import asyncio

import fakeredis

from bus.chatlog import ChatLog
from bus.keys import BusKeys
from bus.pubsub import ChatFeed, Listener

KEYS = BusKeys("t")


async def _published(log: ChatLog, chat_id: str) -> list[str]:
    """The pub/sub messages the appends so far produced, as ``"<prev> <id> <json>"``."""
    prev = "0-0"
    out = []
    for record in await log.events_after(chat_id, "0-0"):
        out.append(f"{prev} {record.event_id} {record.data}")
        prev = record.event_id
    return out


async def test_first_events_read_back_by_the_confirmation_are_not_a_log_restart() -> None:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    log = ChatLog(redis, KEYS)
    feed = ChatFeed(redis, KEYS, log)
    listener = Listener("new-chat", queue_size=10)
    await feed._attach("new-chat", listener)  # not started: no real subscription
    channel = KEYS.chat_channel("new-chat")

    await log.append_event("new-chat", '{"type":"workerState","state":"queued"}')
    await log.append_event("new-chat", '{"type":"workerState","state":"processing"}')
    await feed._on_confirmed(channel)  # reads the position: both events already counted
    for message in await _published(log, "new-chat"):
        await feed._on_message(channel, message)  # the buffered copies arrive late
    live = await log.append_event("new-chat", '{"type":"workerState","state":"done"}')
    await feed._on_message(channel, (await _published(log, "new-chat"))[-1])

    assert feed.restarts == 0
    assert listener.qsize() == 1
    assert (await listener.get()).event_id == live
    await redis.aclose()


async def test_a_chat_log_outage_during_a_confirmation_reconnects_the_feed() -> None:
    """A Redis restart made a log read raise BusUnavailable inside the reader loop, which
    ended the feed task silently: open sockets got no more frames, ever."""
    from bus.errors import BusUnavailable
    from tests.support.wait import wait_until

    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    log = ChatLog(redis, KEYS)
    feed = ChatFeed(redis, KEYS, log)
    real = log.last_event_id
    calls = 0

    async def flaky(chat_id: str) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BusUnavailable("Redis unreachable (ConnectionError)")
        return await real(chat_id)

    log.last_event_id = flaky  # type: ignore[method-assign]
    feed.start()
    try:
        async with feed.listen("c") as listener:  # confirmed after the reconnect
            event_id = await log.append_event("c", '{"type":"workerState","state":"queued"}')
            record = await asyncio.wait_for(listener.get(), 10)
        assert record.event_id == event_id
        assert feed.reconnects == 1
        await wait_until(lambda: feed.connected, timeout=5, message="the feed to reconnect")
    finally:
        await feed.close()
        await redis.aclose()

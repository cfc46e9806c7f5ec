"""Bus pieces behind the fault guarantees, on a real redis-server: job ownership, release,
the streaming mark and stream resets, and the feed noticing a chat log that restarted."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bus import BusError, BusKeys, ChatLog, JobQueue
from bus.chatlog import EventRecord
from bus.client import create_redis
from bus.pubsub import ChatFeed, LogRestarted
from bus.schemas import StreamReset, decode_event
from gateway.streaming import v1_frame_json
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

KEYS = BusKeys()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url, client_name="test")
    try:
        yield client
    finally:
        await client.aclose()


async def _one_job(redis: Redis, consumer: str) -> tuple[JobQueue, str]:
    queue = JobQueue(redis, KEYS, consumer)
    await queue.ensure_group()
    await ChatLog(redis, KEYS).accept_visitor_message("jobs", "hello")
    (delivery,) = await queue.read(count=1, block_ms=100)
    return queue, delivery.entry_id


async def test_touch_never_takes_back_a_job_another_consumer_reclaimed(redis: Redis) -> None:
    slow, entry_id = await _one_job(redis, "slow")
    assert await slow.touch([entry_id]) == []
    await asyncio.sleep(0.15)
    (taken,) = await JobQueue(redis, KEYS, "heir").reclaim(min_idle_ms=100)
    assert taken.entry_id == entry_id
    assert taken.deliveries == 2

    assert await slow.touch([entry_id]) == [entry_id]  # reported, not re-claimed
    (row,) = await redis.xpending_range(KEYS.jobs_stream(0), KEYS.jobs_group, "-", "+", 10)
    assert row["consumer"] == "heir"
    await slow.ack(entry_id)
    assert await slow.touch([entry_id]) == []  # acked: nothing to renew, nothing lost


async def test_released_jobs_are_reclaimed_at_once_without_counting_a_delivery(
    redis: Redis,
) -> None:
    leaving, entry_id = await _one_job(redis, "leaving")
    heir = JobQueue(redis, KEYS, "heir")
    assert await heir.reclaim(min_idle_ms=60_000) == []
    assert await heir.release([entry_id]) == 0  # not heir's to release
    assert await leaving.owned() == [entry_id]
    assert await leaving.release([entry_id]) == 1
    (taken,) = await heir.reclaim(min_idle_ms=60_000)
    assert taken.entry_id == entry_id
    # A job handed back at a graceful stop was not the job's fault: its reclaim costs no
    # delivery. The guarantee soak dead-lettered a visitor's message after a worker SIGKILL
    # and two graceful stops each handed it on ("delivered 4 times").
    assert taken.deliveries == 1
    assert await leaving.owned() == []


async def test_streaming_mark_and_stream_reset(redis: Redis) -> None:
    log = ChatLog(redis, KEYS)
    assert await log.streaming_reply("mark") is None
    await log.append_chunk("mark", "m1", "Hello")
    assert await log.streaming_reply("mark") == "m1"
    reset_id = await log.reset_stream("mark", "m1", "retry")
    await log.finish_reply("mark", "m1", "Hello again")
    assert await log.streaming_reply("mark") is None

    (record,) = [e for e in await log.events_after("mark", "0-0") if e.event_id == reset_id]
    event = decode_event(record.data)
    assert isinstance(event, StreamReset)
    assert record.frame() == {
        "type": "streamReset",
        "chatId": "mark",
        "replyTo": "m1",
        "reason": "retry",
        "emittedAt": event.emittedAt,
        "eventId": reset_id,
    }
    v1 = json.loads(v1_frame_json(record) or "null")
    assert v1 == {
        "type": "assistantChunk",
        "chatId": "mark",
        "content": "",
        "done": True,
        "emittedAt": event.emittedAt,
        "replyTo": "m1",
        "eventId": reset_id,
    }
    assert v1_frame_json(EventRecord("1-0", json.dumps({"type": "reasoning"}))) is None


async def _next(feed: ChatFeed, chat_id: str, after: str, into: list[EventRecord]) -> None:
    async for record in feed.follow(chat_id, after, verify=False):
        into.append(record)


async def test_feed_ends_live_listeners_when_the_chat_log_restarts(redis: Redis) -> None:
    log = ChatLog(redis, KEYS)
    await log.append_chunk("lost", "m1", "before")
    feed = ChatFeed(redis, KEYS, log)
    feed.start()
    try:
        seen: list[EventRecord] = []
        follower = asyncio.create_task(_next(feed, "lost", "0-0", seen))
        await wait_until(lambda: len(seen) == 1, 5, "the first event")
        # The log vanishes (as after a restart without persistence); a new one starts.
        await redis.delete(KEYS.chat_events("lost"), KEYS.chat_meta("lost"))
        await log.append_chunk("lost", "m2", "after")
        with pytest.raises(LogRestarted):
            await asyncio.wait_for(follower, 5)
        assert feed.restarts == 1
        # Following again from 0-0 gives the new log, gap-free.
        again: list[EventRecord] = []
        task = asyncio.create_task(_next(feed, "lost", "0-0", again))
        await wait_until(lambda: len(again) == 1, 5, "the new log's event")
        assert json.loads(again[0].data)["content"] == "after"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await feed.close()


async def test_feed_notices_a_lost_log_when_redis_comes_back_empty(
    redis: Redis, redis_server: RedisServer
) -> None:
    log = ChatLog(redis, KEYS)
    await log.append_chunk("amnesia", "m1", "before")
    feed = ChatFeed(redis, KEYS, log)
    feed.start()
    try:
        seen: list[EventRecord] = []
        follower = asyncio.create_task(_next(feed, "amnesia", "0-0", seen))
        await wait_until(lambda: len(seen) == 1, 5, "the first event")
        await asyncio.to_thread(redis_server.restart)  # no persistence: everything is gone
        with pytest.raises(LogRestarted):
            await asyncio.wait_for(follower, 15)  # at the reconnect, before any new event
    finally:
        await feed.close()


async def test_feed_rides_out_a_restart_that_kept_the_log(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "aof").start(appendonly=True)
    client = create_redis(server.url, client_name="test-aof")
    log = ChatLog(client, KEYS)
    feed = ChatFeed(client, KEYS, log)
    feed.start()
    try:
        await log.append_chunk("kept", "m1", "one")
        seen: list[EventRecord] = []
        follower = asyncio.create_task(_next(feed, "kept", "0-0", seen))
        await wait_until(lambda: len(seen) == 1, 5, "the first event")
        await asyncio.to_thread(server.restart, appendonly=True, down_for=0.5)
        append = functools.partial(_append, log, "kept", "two")
        await wait_until(append, 10, "an append after the restart", ignore=(BusError,))
        await wait_until(lambda: len(seen) == 2, 15, "the event appended after the restart")
        assert not follower.done()
        assert feed.restarts == 0
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    finally:
        await feed.close()
        await client.aclose()
        server.kill()


async def _append(log: ChatLog, chat_id: str, text: str) -> bool:
    await log.append_chunk(chat_id, "m", text)
    return True


async def test_gateway_counts_resumes_by_outcome(gateway: TestServer, chat_log: ChatLog) -> None:
    first = await chat_log.append_chunk("counted", "m1", "one")
    base = f"ws://127.0.0.1:{gateway.port}/api/chat?chatId=counted&accessCode={ACCESS_CODE}"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{base}&lastEventId=0-0") as ws:
            assert json.loads((await ws.receive()).data)["eventId"] == first[0]
        async with http.ws_connect(f"{base}&lastEventId=1-0&v=2") as ws:
            assert json.loads((await ws.receive()).data)["type"] == "resync"
        async with http.get(f"http://127.0.0.1:{gateway.port}/metrics") as resp:
            text = await resp.text()
    assert 'terrarium_resumes_total{outcome="ok"} 1.0' in text
    assert 'terrarium_resumes_total{outcome="resync"} 1.0' in text

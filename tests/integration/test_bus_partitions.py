"""The partitioned layout on one real redis-server (REDIS_PARTITIONS=4, issue 13): a visitor
message is stored and its job enqueued in the chat's own partition by one script, and the
legacy layout's global keys are never touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bus import BacklogFull, BusKeys, ChatLog, QuotaExceeded
from bus.byo import ByoLog
from bus.chatlog import ChatLimits, client_tag
from bus.client import create_redis
from bus.schemas import decode_job
from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration

KEYS = BusKeys("terra", 4)


def one_chat_per_partition() -> list[str]:
    chats: dict[int, str] = {}
    i = 0
    while len(chats) < KEYS.partition_count:
        chats.setdefault(KEYS.partition_of(f"p-{i}"), f"p-{i}")
        i += 1
    return [chats[p] for p in KEYS.partitions]


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url, client_name="test-partitions")
    try:
        yield client
    finally:
        await client.aclose()


def record_commands(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands ``redis`` sends from now on (names only)."""
    sent: list[str] = []
    send = redis.execute_command

    async def recording(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await send(*args, **options)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(redis, "execute_command", recording)
    return sent


async def test_accept_enqueues_in_the_chats_partition_in_one_script(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = ChatLog(redis, KEYS, ChatLimits())
    await log.accept_visitor_message("warm-up", "loads the scripts", client="192.0.2.9")
    sent = record_commands(redis, monkeypatch)
    touched = {KEYS.partition_of("warm-up")}
    for chat_id in one_chat_per_partition():
        part = KEYS.partition_of(chat_id)
        touched.add(part)
        sent.clear()
        accepted = await log.accept_visitor_message(
            chat_id, "hello", client_message_id="m-1", client="192.0.2.9"
        )
        # The client's bytes charged (bus.client_bytes), then one EVALSHA: message, state,
        # lane, ring and job in one atomic round trip.
        assert sent == ["EVALSHA", "EVALSHA"]
        meta = await redis.hgetall(KEYS.chat_meta(chat_id))  # type: ignore[misc]
        assert meta["mode"] == "terra"
        # The job is in the partition's stream, or in the client's lane there behind one
        # ready job (the warm-up's, in the same partition); nowhere else.
        lane = KEYS.queue_lane(part, meta["lane"])
        waiting = [*(f["d"] for _, f in await redis.xrange(KEYS.jobs_stream(part)))]
        waiting += await redis.lrange(lane, 0, -1)  # type: ignore[misc]
        assert accepted.message["id"] in {decode_job(d).message_id for d in waiting}
        assert await redis.exists(KEYS.client_bytes(meta["lane"])) == 1  # one per client
        assert await redis.exists(f"{lane}:bytes") == 0  # not one per partition
        sent.clear()
        await log.accept_visitor_message(chat_id, "no client: no charge")
        assert sent == ["EVALSHA"]
        for other in set(KEYS.partitions) - touched:
            assert await redis.exists(KEYS.jobs_stream(other)) == 0
    legacy = BusKeys("terra")
    for name in (legacy.jobs_stream(0), legacy.queue_ring(0), legacy.queue_waiting(0)):
        assert await redis.exists(name) == 0, name
    assert await redis.keys("terra:chat:{p-*") == []  # no chat key in the legacy shape


async def test_a_gateway_with_four_partitions_stores_and_serves_chats(
    redis_server: RedisServer, redis: Redis
) -> None:
    settings = gateway_settings(redis_server.url, redis_partitions=4)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            for chat_id in one_chat_per_partition():
                async with http.post(
                    server.make_url(f"/api/chat/{chat_id}/messages"),
                    json={"content": f"hi {chat_id}", "accessCode": ACCESS_CODE},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                async with http.get(
                    server.make_url(f"/api/chat/{chat_id}/messages"),
                    params={"accessCode": ACCESS_CODE},
                ) as resp:
                    history = await resp.json()
                assert [m["content"] for m in history] == [f"hi {chat_id}"]
                stream = KEYS.jobs_stream(KEYS.partition_of(chat_id))
                assert [decode_job(f["d"]).chat_id for _, f in await redis.xrange(stream)] == [
                    chat_id
                ]
    finally:
        await server.close()


async def test_the_backlog_cap_is_shared_by_the_partitions(redis: Redis) -> None:
    """JOBS_MAXLEN 8 over 4 partitions: 2 unfinished jobs each, so the whole backlog stays 8."""
    log = ChatLog(redis, KEYS, ChatLimits(jobs_maxlen=8))
    first, second = one_chat_per_partition()[:2]
    await log.accept_visitor_message(first, "one")
    await log.accept_visitor_message(first, "two")
    with pytest.raises(BacklogFull):
        await log.accept_visitor_message(first, "three")
    assert not (await log.accept_visitor_message(second, "elsewhere")).duplicate


async def test_a_clients_bytes_are_counted_once_across_partitions(redis: Redis) -> None:
    """CLIENT_BYTES_PER_DAY holds whatever partitions a client's chats fall in (a counter per
    partition would give it the budget once per partition); a retry of a stored message is
    still answered with it, and a refused accept gives its charge back."""
    log = ChatLog(redis, KEYS, ChatLimits(client_bytes_per_window=3000, reply_bytes_reserved=1000))
    byo = ByoLog(redis, log)
    first, second, third = one_chat_per_partition()[:3]
    client = "192.0.2.10"
    stored = await log.accept_visitor_message(first, "one", client_message_id="m1", client=client)
    counter = KEYS.client_bytes(client_tag(KEYS.prefix, client))
    charged = int(await redis.get(counter) or 0)
    assert 1000 < charged < 3000
    with pytest.raises(QuotaExceeded) as refused:  # the second partition counts the first's
        await log.accept_visitor_message(second, "two " * 200, client=client)
    assert refused.value.scope == "client"
    with pytest.raises(QuotaExceeded):  # a BYO message draws on the same budget
        await byo.accept(
            third, "three " * 200, provider="p", model="m", lease_ms=1000, client=client
        )
    assert int(await redis.get(counter) or 0) == charged  # the refusals charged nothing
    again = await log.accept_visitor_message(first, "one", client_message_id="m1", client=client)
    assert again.duplicate
    assert again.message["id"] == stored.message["id"]
    assert int(await redis.get(counter) or 0) == charged  # the retry's charge given back
    assert 0 < await redis.pttl(counter) <= ChatLimits().client_bytes_window_ms

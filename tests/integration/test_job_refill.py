"""The refill a blocking read owes (issue 10): after a read delivers, one job waiting in a
client's lane is made ready again in that partition, so another idle worker's blocking read
wakes; the next take pays it in its own round trip, or :meth:`JobQueue.refill` when the
consumer will not take (no room). Real redis-server, one partition and four."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bus import BusKeys, ChatLog, JobQueue
from bus.chatlog import ChatLimits
from bus.client import create_redis
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

LAYOUTS = [BusKeys(), BusKeys(partitions=4)]


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url, client_name="test")
    try:
        yield client
    finally:
        await client.aclose()


def chats_in(keys: BusKeys, partition: int, count: int) -> list[str]:
    """``count`` chat ids of ``partition``."""
    found = [f"chat-{i}" for i in range(200) if keys.partition_of(f"chat-{i}") == partition]
    return found[:count]


async def queue_three(redis: Redis, keys: BusKeys, partition: int) -> JobQueue:
    """Three jobs in ``partition``: the accept makes the first ready, two wait in the lane."""
    queue = JobQueue(redis, keys, "w1")
    await queue.ensure_group()
    chatlog = ChatLog(redis, keys, ChatLimits(queued_per_client=1000))
    for chat in chats_in(keys, partition, 3):
        await chatlog.accept_visitor_message(chat, "hello", client="c")
    assert await ready_and_waiting(redis, keys, partition) == (1, 2)
    return queue


async def ready_and_waiting(redis: Redis, keys: BusKeys, partition: int) -> tuple[int, int]:
    """(jobs in the stream not yet delivered, jobs waiting in the lanes)."""
    stream = keys.jobs_stream(partition)
    groups = await redis.xinfo_groups(stream)
    lag = next(int(g["lag"]) for g in groups if g["name"] == keys.jobs_group)
    waiting = int(await redis.get(keys.queue_waiting(partition)) or 0)
    return lag, waiting


@pytest.mark.parametrize("keys", LAYOUTS, ids=["one-partition", "four-partitions"])
async def test_the_take_after_a_read_leaves_one_job_ready_for_an_idle_worker(
    redis: Redis, keys: BusKeys
) -> None:
    partition = keys.partition_count - 1
    queue = await queue_three(redis, keys, partition)
    (first,) = await queue.read(count=1, block_ms=1000)
    assert first.partition == partition
    (second,) = await queue.take(1)  # also what the read owed: the third is made ready
    assert await ready_and_waiting(redis, keys, partition) == (1, 0)
    other = JobQueue(redis, keys, "w2")
    (third,) = await other.read(count=1, block_ms=1000)
    assert len({first.entry_id, second.entry_id, third.entry_id}) == 3


@pytest.mark.parametrize("keys", LAYOUTS, ids=["one-partition", "four-partitions"])
async def test_a_consumer_with_no_room_pays_the_refill_once(redis: Redis, keys: BusKeys) -> None:
    partition = keys.partition_count - 1
    queue = await queue_three(redis, keys, partition)
    await queue.read(count=1, block_ms=1000)
    await queue.refill()
    assert await ready_and_waiting(redis, keys, partition) == (1, 1)
    await queue.refill()  # owed once: nothing more moves
    assert await ready_and_waiting(redis, keys, partition) == (1, 1)


async def test_a_take_without_a_read_before_it_refills_nothing(redis: Redis) -> None:
    keys = BusKeys()
    queue = await queue_three(redis, keys, 0)
    await queue.take(1)
    assert await ready_and_waiting(redis, keys, 0) == (0, 2)


@pytest.mark.parametrize("per_partition", [False, True], ids=["one-read", "read-per-partition"])
async def test_jobs_a_read_took_beyond_its_count_wake_another_consumer_at_once(
    redis: Redis, per_partition: bool
) -> None:
    """A read over several partitions may return more than ``count`` (up to ``count`` in
    each): the extra jobs go back as new ones, so an idle consumer's blocking read takes
    them now instead of at its next reclaim sweep (cluster-bench: up to 2 s)."""
    keys = BusKeys(partitions=4)
    first = JobQueue(redis, keys, "w1", per_partition_reads=per_partition)
    await first.ensure_group()
    chatlog = ChatLog(redis, keys, ChatLimits(queued_per_client=1000))
    chats = [chats_in(keys, p, 1)[0] for p in (1, 2)]
    for chat in chats:
        await chatlog.accept_visitor_message(chat, "hello", client=chat)
    taken: list[str] = []
    while len(taken) < 1:  # with reads per partition, one may answer before the other
        taken += [d.job.chat_id for d in await first.read(count=1, block_ms=1000) if d.job]
    await first.settle()
    other = JobQueue(redis, keys, "w2", per_partition_reads=per_partition)
    (late,) = await other.read(count=1, block_ms=5000)
    assert late.job is not None
    assert {late.job.chat_id, *taken} == set(chats)
    assert late.deliveries == 1
    await other.settle()

"""Jobs on a real 3-master Redis Cluster (issue 13), 16 partitions spread over the masters:
a blocking read per partition wakes for a job on any master; two workers answer chats of
every partition exactly once; a dead worker's job in partition 3 is reclaimed there; a flood
in one partition does not starve another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bus import BusKeys, ChatLog, JobQueue
from bus.chatlog import ChatLimits
from bus.client import create_redis
from bus.ops import LayoutRefused, open_ops_bus
from bus.settings import BusSettings
from demo.agent import DemoAgentConfig, run_demo_agent
from tests.support.agent import agent_requests
from tests.support.redis_cluster import RedisCluster
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from worker import Worker

pytestmark = pytest.mark.integration

KEYS = BusKeys("terra", 16, cluster=True)


def chat_in(partition: int, stem: str) -> str:
    """A chat id whose partition is ``partition``."""
    i = 0
    while KEYS.partition_of(f"{stem}-{i}") != partition:
        i += 1
    return f"{stem}-{i}"


@pytest.fixture
async def redis(redis_cluster: RedisCluster) -> AsyncIterator[Redis]:
    client = create_redis(redis_cluster.url, client_name="test-cluster-jobs", cluster=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def log(redis: Redis) -> ChatLog:
    return ChatLog(redis, KEYS, ChatLimits(queued_per_client=1000))


@pytest.fixture
async def agent_url() -> AsyncIterator[str]:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=1)) as url:
        yield url


async def pending(redis: Redis) -> int:
    total = 0
    for p in KEYS.partitions:
        info = await redis.xpending(KEYS.jobs_stream(p), KEYS.jobs_group)
        total += int(info["pending"])
    return total


async def drain(redis: Redis) -> None:
    """Ack whatever an earlier test left, so each test starts with empty queues."""
    queue = JobQueue(redis, KEYS, "drain")
    await queue.ensure_group()
    while taken := await queue.take(100):
        for d in taken:
            await queue.ack(d.entry_id, d.partition)


def test_the_partitions_streams_live_on_every_master(redis_cluster: RedisCluster) -> None:
    owners = {redis_cluster.node_for_key(KEYS.jobs_stream(p)).node_id for p in KEYS.partitions}
    assert len(owners) == 3


async def test_a_read_per_partition_wakes_for_a_job_on_any_master(
    redis: Redis, log: ChatLog, redis_cluster: RedisCluster
) -> None:
    await drain(redis)
    queue = JobQueue(redis, KEYS, "reader")  # a cluster: one blocking read per partition
    await queue.ensure_group()
    masters = set()
    for p in (3, 9, 14):
        reader = asyncio.create_task(queue.read(count=1, block_ms=10_000))
        chat = chat_in(p, "wake")
        masters.add(redis_cluster.node_for_key(KEYS.jobs_stream(p)).node_id)
        await log.accept_visitor_message(chat, "wake up")
        (delivery,) = await asyncio.wait_for(reader, timeout=5)
        assert delivery.partition == p
        assert delivery.job is not None
        assert delivery.job.chat_id == chat
        await queue.ack(delivery.entry_id, p)
    await queue.settle()  # the reads still in flight stop and hand back what they took
    assert len(masters) == 3  # the three partitions live on the three masters
    assert await pending(redis) == 0


async def test_two_workers_answer_every_partition_exactly_once(
    redis: Redis, log: ChatLog, redis_cluster: RedisCluster, agent_url: str
) -> None:
    await drain(redis)
    chats = [chat_in(p, "pair") for p in KEYS.partitions]
    options = {"redis_cluster": True, "max_concurrent_chats": 4}
    one = fast_settings(redis_cluster.url, agent_url, worker_name="cw1", **options)
    two = fast_settings(redis_cluster.url, agent_url, worker_name="cw2", **options)
    async with Worker(one) as w1, Worker(two) as w2:
        posted = {
            chat: (await log.accept_visitor_message(chat, f"[[demo:echo]] {chat}")).message["id"]
            for chat in chats
        }

        async def all_answered() -> bool:
            for chat in chats:
                terra = [m for m in await log.history(chat) if m["sender"] == "Terra"]
                if [m["replyTo"] for m in terra] != [posted[chat]]:
                    return False
            return await pending(redis) == 0

        await wait_until(all_answered, timeout=30, message="every chat answered")

        def done(w: Worker) -> float:
            value = w.metrics.registry.get_sample_value(
                "terrarium_worker_jobs_total", {"outcome": "answered"}
            )
            return value or 0.0

        await wait_until(
            lambda: _true(done(w1) + done(w2) == len(chats)), message="every job counted"
        )
        shares = [done(w1), done(w2)]
    assert len(await agent_requests(agent_url)) == len(chats)  # one agent call each
    assert min(shares) > 0


async def _true(value: bool) -> bool:
    return value


async def test_a_dead_workers_job_in_partition_3_is_reclaimed_there(
    redis: Redis, log: ChatLog, redis_cluster: RedisCluster, agent_url: str
) -> None:
    await drain(redis)
    dead = JobQueue(redis, KEYS, "cluster-dead-worker")
    await dead.ensure_group()
    chat = chat_in(3, "orphan")
    accepted = await log.accept_visitor_message(chat, "[[demo:echo]] anyone?")
    (taken,) = await dead.take(1)
    assert taken.partition == 3
    settings = fast_settings(redis_cluster.url, agent_url, worker_name="heir", redis_cluster=True)
    async with Worker(settings) as heir:

        async def answered() -> bool:
            terra = [m for m in await log.history(chat) if m["sender"] == "Terra"]
            return [m["replyTo"] for m in terra] == [accepted.message["id"]]

        await wait_until(answered, timeout=20, message="the orphan answered")
        await wait_until(lambda: _zero(redis), message="the job acked")
    reclaimed = heir.metrics.registry.get_sample_value(
        "terrarium_worker_job_handovers_total", {"kind": "reclaimed"}
    )
    assert reclaimed == 1


async def _zero(redis: Redis) -> bool:
    return await pending(redis) == 0


async def test_a_flood_in_one_partition_does_not_starve_another(redis: Redis, log: ChatLog) -> None:
    await drain(redis)
    queue = JobQueue(redis, KEYS, "fair")
    for i in range(20):
        await log.accept_visitor_message(chat_in(5, f"flood{i}"), f"flood {i}", client=f"f{i}")
    await log.accept_visitor_message(chat_in(11, "quiet"), "quiet question", client="quiet")
    order: list[int] = []
    while len(order) < 21:
        (d,) = await queue.take(1)
        order.append(d.partition)
        await queue.ack(d.entry_id, d.partition)
    assert order.index(11) < len(KEYS.partitions)
    assert sorted(order) == [5] * 20 + [11]


async def test_the_console_lists_and_requeues_jobs_of_every_partition(
    redis: Redis, log: ChatLog, redis_cluster: RedisCluster
) -> None:
    await drain(redis)
    settings = BusSettings(redis_url=redis_cluster.url, redis_cluster=True)
    worker = JobQueue(redis, KEYS, "console-worker")
    chats = [chat_in(p, "console") for p in (2, 7, 13)]
    for chat in chats:
        await log.accept_visitor_message(chat, "for the console")
    async with open_ops_bus(settings) as ops:
        waiting, in_progress = await ops.jobs()
        assert sorted(e.partition for e in waiting) == [2, 7, 13]
        assert in_progress == []
        (dead,) = [d for d in await worker.take(3) if d.partition == 7]
        await worker.dead_letter(dead, "delivered 4 times")
        (letter,) = await ops.dead_letters()
        assert (letter.partition, letter.ref) == (7, f"7/{letter.dead_id}")
        done = await ops.requeue(letter.ref)
        assert done.chat_id == chats[1]
        assert await redis.xlen(KEYS.dead_letters_stream(7)) == 0
        (again,) = await worker.take(1)  # back in its chat's partition
        assert again.partition == 7
        assert {c.chat_id for c in await ops.chats()} >= set(chats)


async def test_the_console_says_follow_does_not_run_on_a_cluster(
    redis_cluster: RedisCluster,
) -> None:
    settings = BusSettings(redis_url=redis_cluster.url, redis_cluster=True)
    async with open_ops_bus(settings) as ops:
        with pytest.raises(LayoutRefused, match="follow does not run on a cluster yet"):
            async for _ in ops.follow(None):
                pass

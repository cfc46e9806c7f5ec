"""Jobs across partitions (issue 13, REDIS_PARTITIONS=4 on one real redis-server): every
partition is read, fairly; each job is answered once; a dead worker's job is reclaimed in
its own partition; a blocking read spans the partitions (one XREADGROUP, or one read per
partition as on a cluster, whose cancelled reads hand back what they took)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bus import BusKeys, ChatLog, Delivery, JobQueue
from bus.chatlog import ChatLimits
from bus.client import create_redis
from tests.support.agent import agent_requests
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from worker import Worker

pytestmark = pytest.mark.integration

PARTITIONS = 4
KEYS = BusKeys(partitions=PARTITIONS)


def chats_in(partition: int, count: int, stem: str = "chat") -> list[str]:
    """``count`` chat ids whose partition is ``partition``."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        chat_id = f"{stem}-{i}"
        if KEYS.partition_of(chat_id) == partition:
            found.append(chat_id)
        i += 1
    return found


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url, client_name="test")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def chatlog(redis: Redis) -> ChatLog:
    return ChatLog(redis, KEYS, ChatLimits(queued_per_client=1000))


async def post(chatlog: ChatLog, chat_id: str, content: str, client: str = "c") -> str:
    accepted = await chatlog.accept_visitor_message(chat_id, content, client=client)
    return str(accepted.message["id"])


async def pending(redis: Redis) -> int:
    total = 0
    for p in KEYS.partitions:
        total += int((await redis.xpending(KEYS.jobs_stream(p), KEYS.jobs_group))["pending"])
    return total


async def reply_to(chatlog: ChatLog, chat_id: str, message_id: str) -> dict[str, object]:
    async def probe() -> dict[str, object] | None:
        for frame in await chatlog.history(chat_id):
            if frame["sender"] == "Terra" and frame.get("replyTo") == message_id:
                return frame
        return None

    return await wait_until(probe, timeout=15, message=f"the reply to {message_id}")


def outcome(worker: Worker, name: str) -> float:
    value = worker.metrics.registry.get_sample_value(
        "terrarium_worker_jobs_total", {"outcome": name}
    )
    return value or 0.0


async def test_the_partitioned_layout_names_one_stream_per_partition(chatlog: ChatLog) -> None:
    queue = JobQueue(chatlog.redis, KEYS, "w1")
    await queue.ensure_group()
    for p in KEYS.partitions:
        await post(chatlog, chats_in(p, 1)[0], f"hello {p}")
    for p in KEYS.partitions:
        assert KEYS.jobs_stream(p) != KEYS.jobs_stream(0) or p == 0
        assert await chatlog.redis.xlen(KEYS.jobs_stream(p)) == 1  # the accept promoted it
    taken = await queue.take(10)
    assert sorted(d.partition for d in taken) == list(KEYS.partitions)
    for d in taken:
        assert d.job is not None
        assert KEYS.partition_of(d.job.chat_id) == d.partition
    assert (await queue.stats())["pending"] == PARTITIONS


async def test_two_workers_answer_chats_of_every_partition_exactly_once(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog, redis: Redis
) -> None:
    chats = [chat for p in KEYS.partitions for chat in chats_in(p, 2)]
    settings = {"redis_partitions": PARTITIONS, "max_concurrent_chats": 3}
    one = fast_settings(redis_server.url, agent_url, worker_name="w1", **settings)
    two = fast_settings(redis_server.url, agent_url, worker_name="w2", **settings)
    async with Worker(one) as w1, Worker(two) as w2:
        posted = {
            chat: [await post(chatlog, chat, f"[[demo:echo]] {chat} {n}") for n in (0, 1)]
            for chat in chats
        }
        for chat, ids in posted.items():
            for message_id in ids:
                await reply_to(chatlog, chat, message_id)

        async def all_counted() -> bool:
            done = sum(outcome(w, o) for w in (w1, w2) for o in ("answered", "duplicate"))
            return done == 2 * len(chats)

        await wait_until(all_counted, message="every job counted")
        shares = [outcome(w, "answered") + outcome(w, "duplicate") for w in (w1, w2)]
    assert len(await agent_requests(agent_url)) == 2 * len(chats)  # one agent call each
    for chat, ids in posted.items():
        terra = [m for m in await chatlog.history(chat) if m["sender"] == "Terra"]
        assert [m["replyTo"] for m in terra] == ids
        assert [m["content"] for m in terra] == [f"{chat} 0", f"{chat} 1"]
    assert min(shares) > 0  # both workers took part
    assert await pending(redis) == 0


async def test_a_dead_workers_job_in_partition_3_is_reclaimed_and_answered_once(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog, redis: Redis
) -> None:
    dead = JobQueue(redis, KEYS, "dead-worker")
    await dead.ensure_group()
    chat = chats_in(3, 1)[0]
    message_id = await post(chatlog, chat, "[[demo:echo]] still there?")
    (taken,) = await dead.read(count=10, block_ms=100)
    assert taken.partition == 3  # the dead worker took it and never acks

    settings = fast_settings(
        redis_server.url, agent_url, worker_name="heir", redis_partitions=PARTITIONS
    )
    async with Worker(settings) as heir:
        reply = await reply_to(chatlog, chat, message_id)

        async def none_pending() -> bool:
            return await pending(redis) == 0

        await wait_until(none_pending, message="the job acked in partition 3")
    assert reply["content"] == "still there?"
    assert len(await agent_requests(agent_url)) == 1
    reclaimed = heir.metrics.registry.get_sample_value(
        "terrarium_worker_job_handovers_total", {"kind": "reclaimed"}
    )
    assert reclaimed == 1


async def test_a_flood_in_one_partition_does_not_starve_another(chatlog: ChatLog) -> None:
    queue = JobQueue(chatlog.redis, KEYS, "w1")
    await queue.ensure_group()
    flooded = chats_in(0, 30, stem="flood")
    for i, chat in enumerate(flooded):  # thirty clients, so the lanes cannot hold it back
        await post(chatlog, chat, f"flood {i}", client=f"flooder{i}")
    (quiet,) = chats_in(2, 1, stem="quiet")
    await post(chatlog, quiet, "the quiet partition's question", client="visitor")
    order: list[int] = []
    while len(order) < 31:
        taken = await queue.take(1)
        assert len(taken) == 1
        order.append(taken[0].partition)
        await queue.ack(taken[0].entry_id, taken[0].partition)
    # A take walks the partitions from a start that moves by one each time: the quiet
    # partition's job is taken within one round of the partitions, not after the flood.
    assert order.index(2) < PARTITIONS
    assert sorted(order) == [0] * 30 + [2]


@pytest.mark.parametrize("per_partition", [False, True], ids=["one-read", "read-per-partition"])
async def test_a_blocking_read_wakes_for_a_job_in_any_partition(
    chatlog: ChatLog, per_partition: bool
) -> None:
    queue = JobQueue(chatlog.redis, KEYS, "w1", per_partition_reads=per_partition)
    await queue.ensure_group()
    for p in (3, 1):
        reader = asyncio.create_task(queue.read(count=2, block_ms=10_000))
        await wait_until(lambda: _blocked(chatlog.redis), message="the read blocking")
        chat = chats_in(p, 1, stem=f"wake{p}")[0]
        await post(chatlog, chat, "wake up")
        (delivery,) = await asyncio.wait_for(reader, timeout=5)
        assert delivery.partition == p
        assert delivery.job is not None
        assert delivery.job.chat_id == chat
        await queue.ack(delivery.entry_id, p)
    await queue.settle()
    assert await pending(chatlog.redis) == 0


async def times_delivered(redis: Redis, delivery: Delivery) -> int:
    """How many times Redis delivered the job's entry (its pending row)."""
    stream = KEYS.jobs_stream(delivery.partition)
    rows = await redis.xpending_range(
        stream, KEYS.jobs_group, min=delivery.entry_id, max=delivery.entry_id, count=1
    )
    return int(rows[0]["times_delivered"])


async def _blocked(redis: Redis) -> bool:
    clients = await redis.client_list()
    return any(c.get("cmd") == "xreadgroup" and c.get("flags") == "b" for c in clients)


async def test_a_cancelled_per_partition_read_hands_back_what_it_took(
    chatlog: ChatLog, redis: Redis
) -> None:
    queue = JobQueue(redis, KEYS, "w1", per_partition_reads=True)
    await queue.ensure_group()
    # A job delivered to w1 by a read whose reply never reached it (cancelled as Redis
    # answered): pending under w1, held by nobody.
    orphan_chat = chats_in(2, 1, stem="orphan")[0]
    await post(chatlog, orphan_chat, "lost in flight")
    await redis.xreadgroup(KEYS.jobs_group, "w1", {KEYS.jobs_stream(2): ">"}, count=1)
    assert await queue.owned(partition=2)
    # A job of w1's own (handed to it) in partition 0 stays w1's.
    await post(chatlog, chats_in(0, 1, stem="mine")[0], "mine")
    (mine,) = await queue.take(1)
    assert mine.partition == 0
    # A job in partition 1: its read answers at once, the other partitions' reads are
    # cancelled, and w1 hands back the orphan it finds in them.
    await post(chatlog, chats_in(1, 1, stem="next")[0], "next")
    (woke,) = await queue.read(count=1, block_ms=1000)
    assert woke.partition == 1
    await queue.settle()  # the reads left in flight stop, and hand back what they took
    heir = JobQueue(redis, KEYS, "heir")
    # Handed back as a new job: another consumer's read takes it at once (not at its next
    # reclaim sweep); w1's own job stays w1's.
    (reclaimed,) = await heir.read(count=10, block_ms=1000)
    assert reclaimed.partition == 2
    assert await times_delivered(redis, reclaimed) == 1  # handing back cost no delivery
    assert reclaimed.job is not None
    assert reclaimed.job.chat_id == orphan_chat
    assert await queue.owned(partition=0) == [mine.entry_id]


async def test_jobs_beyond_the_count_of_one_read_are_handed_back(
    chatlog: ChatLog, redis: Redis
) -> None:
    queue = JobQueue(redis, KEYS, "w1")
    await queue.ensure_group()
    for p in KEYS.partitions:  # each accept puts its job in its partition's stream
        await post(chatlog, chats_in(p, 1, stem="many")[0], f"job {p}")
    taken = await queue.read(count=1, block_ms=100)  # one XREADGROUP: 1 per stream
    assert len(taken) == 1
    heir = JobQueue(redis, KEYS, "heir")
    others = await heir.take(PARTITIONS)  # handed back as new jobs: ready at once
    assert len(others) == PARTITIONS - 1
    assert {d.partition for d in others} | {taken[0].partition} == set(KEYS.partitions)
    assert {await times_delivered(redis, d) for d in others} == {1}


async def test_dead_letters_stay_in_the_jobs_partition(chatlog: ChatLog, redis: Redis) -> None:
    queue = JobQueue(redis, KEYS, "w1")
    await queue.ensure_group()
    chat = chats_in(3, 1, stem="poison")[0]
    await post(chatlog, chat, "poison")
    (delivery,) = await queue.take(1)
    await queue.dead_letter(delivery, "delivered 4 times")
    assert await redis.xlen(KEYS.dead_letters_stream(3)) == 1
    assert sum([await redis.xlen(KEYS.dead_letters_stream(p)) for p in (0, 1, 2)]) == 0
    assert await pending(redis) == 0
    assert (await queue.stats())["dead"] == 1


async def test_a_job_taken_by_a_read_left_in_flight_is_handed_back_when_reading_stops(
    chatlog: ChatLog, redis: Redis
) -> None:
    queue = JobQueue(redis, KEYS, "w1", per_partition_reads=True)
    await queue.ensure_group()
    await post(chatlog, chats_in(1, 1, stem="first")[0], "first")
    (first,) = await queue.read(count=1, block_ms=5000)  # the other reads stay in flight
    assert first.partition == 1
    late_chat = chats_in(2, 1, stem="late")[0]
    await post(chatlog, late_chat, "arrives while w1 has no room")

    async def taken_by_w1() -> bool:  # the read in flight on partition 2 took it
        return bool(await queue.owned(partition=2))

    await wait_until(taken_by_w1, message="the read in flight taking the job")
    await queue.settle()  # w1 has no room: it stops reading and hands the job back
    (handed,) = await JobQueue(redis, KEYS, "w2").read(count=10, block_ms=1000)
    assert handed.partition == 2
    assert await times_delivered(redis, handed) == 1  # handed back: no delivery spent
    assert handed.job is not None
    assert handed.job.chat_id == late_chat

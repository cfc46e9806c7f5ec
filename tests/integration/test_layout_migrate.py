"""``terrarium-ops layout migrate``: a live-looking legacy data set (chats with history and
idempotency records, jobs waiting in the clients' lanes and in the stream, a job pending
under a dead worker, a dead letter) moved to 4 partitions and back, through the console as an
operator runs it; nothing is lost, a second run changes nothing, a run refuses while a worker
is alive, and a worker answers every waiting job afterwards, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bus import BusKeys, BusUnavailable, ChatLog, JobQueue
from bus.chatlog import ChatLimits, client_tag, parse_id
from bus.client import create_redis
from bus.migrate import LayoutMigration
from bus.ops import open_ops_bus
from bus.settings import BusSettings
from tests.integration.test_ops_console import run_ops
from tests.support.agent import agent_requests
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from worker import Worker

pytestmark = pytest.mark.integration

LEGACY = BusKeys()
FOUR = BusKeys(partitions=4)
LIMITS = ChatLimits(queued_per_client=50)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url, client_name="test")
    try:
        yield client
    finally:
        await client.aclose()


async def snapshot(redis: Redis, keys: BusKeys, chats: list[str]) -> dict[str, Any]:
    """Every chat's events and history as ``keys``' layout reads them."""
    log = ChatLog(redis, keys, LIMITS)
    return {
        chat: (
            [(r.event_id, r.fields) for r in await log.events_after(chat, "0-0")],
            await log.history(chat),
        )
        for chat in chats
    }


async def queued_jobs(redis: Redis, keys: BusKeys) -> list[str]:
    """Jobs not finished in ``keys``' layout: in the lanes, not delivered, or pending."""
    out: list[str] = []
    for p in keys.partitions:
        stream = keys.jobs_stream(p)
        groups = await redis.xinfo_groups(stream) if await redis.exists(stream) else []
        delivered = str(groups[0]["last-delivered-id"]) if groups else "0-0"
        rows = await redis.xpending_range(stream, keys.jobs_group, "-", "+", 100) if groups else []
        pending = {str(r["message_id"]) for r in rows}
        for entry_id, fields in await redis.xrange(stream):
            if entry_id in pending or parse_id(entry_id) > parse_id(delivered):
                out.append(fields["d"])
        for client in await redis.zrange(keys.queue_ring(p), 0, -1):
            lane: list[str] = await redis.lrange(keys.queue_lane(p, client), 0, -1)  # type: ignore[misc]
            out += lane
    return sorted(out)


async def legacy_data_set(
    redis_server: RedisServer, agent_url: str, redis: Redis
) -> tuple[list[str], str]:
    """Chats with answered history, then waiting, pending and dead-lettered jobs; and the
    chat whose job is the dead letter."""
    log = ChatLog(redis, LEGACY, LIMITS)
    chats = [f"mig-{i}" for i in range(6)]
    settings = fast_settings(redis_server.url, agent_url, worker_name="before")
    async with Worker(settings):  # history: one answered question per chat
        for chat in chats:
            accepted = await log.accept_visitor_message(
                chat, f"[[demo:echo]] hello {chat}", client_message_id=f"cm-{chat}"
            )

            async def answered(chat: str = chat) -> bool:
                return any(m["sender"] == "Terra" for m in await log.history(chat))

            await wait_until(answered, message=f"{chat} answered")
            assert accepted.message["id"]
    # The worker stopped gracefully (its liveness key is gone). Now a backlog:
    for chat in chats:  # one client: the first job enters the stream, the rest wait in lanes
        await log.accept_visitor_message(chat, f"[[demo:echo]] later {chat}", client="busy")
    dead_worker = JobQueue(redis, LEGACY, "dead-worker")
    (pending,) = await dead_worker.take(1)  # pending under a worker that is gone
    assert pending.job is not None
    poison = JobQueue(redis, LEGACY, "poisoned")
    (letter,) = await poison.take(1)
    await poison.dead_letter(letter, "delivered 4 times")
    assert letter.job is not None
    # Another client's first message goes straight to the stream, not delivered yet.
    await log.accept_visitor_message("mig-new", "[[demo:echo]] fresh", client="solo")
    return [*chats, "mig-new"], letter.job.chat_id


async def test_migrate_to_four_partitions_and_back(
    redis_server: RedisServer, agent_url: str, redis: Redis
) -> None:
    chats, dead_chat = await legacy_data_set(redis_server, agent_url, redis)
    replies = {chat: 2 for chat in chats if chat not in (dead_chat, "mig-new")} | {"mig-new": 1}
    before = await snapshot(redis, LEGACY, chats)
    jobs_before = await queued_jobs(redis, LEGACY)
    assert len(jobs_before) == 6  # 4 in lanes, 1 in the stream, 1 pending
    (dead_before,) = await redis.xrange(LEGACY.dead_letters_stream(0))
    agent_calls = len(await agent_requests(agent_url))

    dry = await run_ops(redis_server.url, "layout", "migrate", "--partitions", "4", "--dry-run")
    assert dry.status == 0, dry.err
    assert "from legacy (dry run)" in dry.out
    assert "jobs would move: 6 (4 lane, 1 stream, 1 pending)" in dry.out
    assert "dead letters would move: 1" in dry.out
    assert await snapshot(redis, LEGACY, chats) == before  # nothing written
    assert await queued_jobs(redis, LEGACY) == jobs_before

    await redis.set(LEGACY.worker_alive("w9"), "1", px=60_000)
    refused = await run_ops(redis_server.url, "layout", "migrate", "--partitions", "4")
    assert refused.status == 1
    assert "1 worker(s) alive (w9)" in refused.err
    assert await snapshot(redis, LEGACY, chats) == before
    await redis.delete(LEGACY.worker_alive("w9"))

    moved = await run_ops(redis_server.url, "layout", "migrate", "--partitions", "4")
    assert moved.status == 0, moved.err
    assert "layout migrate to 4 partitions, from legacy" in moved.out
    assert "jobs moved: 6 (4 lane, 1 stream, 1 pending)" in moved.out
    assert "set REDIS_PARTITIONS=4" in moved.err
    assert await snapshot(redis, FOUR, chats) == before
    assert await queued_jobs(redis, FOUR) == jobs_before
    assert await redis.keys(f"{LEGACY.prefix}:chat:{{mig-*") == []  # no legacy chat key left
    assert not await redis.exists(LEGACY.jobs_stream(0), LEGACY.queue_ring(0))
    assert await redis.pttl(FOUR.chat_events(chats[0])) > 0  # retention kept
    busy = client_tag(LEGACY.prefix, "busy")
    assert await redis.exists(FOUR.client_bytes(busy))  # the client's byte budget moved
    for chat in chats:  # every job went to its chat's partition
        for p in FOUR.partitions:
            in_p = [f["d"] for _, f in await redis.xrange(FOUR.jobs_stream(p))]
            assert all(chat not in raw for raw in in_p) or FOUR.partition_of(chat) == p
    async with open_ops_bus(BusSettings(redis_url=redis_server.url, redis_partitions=4)) as ops:
        (letter,) = await ops.dead_letters()
        assert letter.partition == FOUR.partition_of(letter.chat_id or "")
        assert letter.reason == "delivered 4 times"
        waiting, in_progress = await ops.jobs()
        assert (len(waiting), in_progress) == (6, [])
    listed = await run_ops(redis_server.url, "jobs", env={"REDIS_PARTITIONS": "4"})
    assert listed.out.splitlines()[0].split()[0] == "PARTITION"

    again = await run_ops(redis_server.url, "layout", "migrate", "--partitions", "4")
    assert again.status == 0, again.err
    assert "nothing to do" in again.err
    assert await queued_jobs(redis, FOUR) == jobs_before

    back = await run_ops(redis_server.url, "layout", "migrate", "--partitions", "1")
    assert back.status == 0, back.err
    assert "from partitioned" in back.out
    assert await snapshot(redis, LEGACY, chats) == before
    assert await queued_jobs(redis, LEGACY) == jobs_before
    assert await redis.exists(LEGACY.client_bytes(busy))
    (dead_after,) = await redis.xrange(LEGACY.dead_letters_stream(0))
    assert dead_after[1] == dead_before[1]
    assert await redis.keys(f"{LEGACY.prefix}:*{{*.*}}*") == []  # no partitioned key left

    # The system answers every waiting job (the one pending under the dead worker too), once.
    log = ChatLog(redis, LEGACY, LIMITS)
    settings = fast_settings(redis_server.url, agent_url, worker_name="after")
    async with Worker(settings):
        for chat, count in replies.items():  # (the dead-lettered job's chat waits)

            async def answered(chat: str = chat, count: int = count) -> bool:
                terra = [m for m in await log.history(chat) if m["sender"] == "Terra"]
                return len(terra) == count

            await wait_until(answered, message=f"{chat}'s waiting job answered")
    assert len(await agent_requests(agent_url)) == agent_calls + 6
    for chat in replies:
        terra = [m["content"] for m in await log.history(chat) if m["sender"] == "Terra"]
        expected = ["fresh"] if chat == "mig-new" else [f"hello {chat}", f"later {chat}"]
        assert terra == expected


async def test_an_interrupted_migration_finishes_when_run_again(
    redis_server: RedisServer,
    agent_url: str,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chats, _ = await legacy_data_set(redis_server, agent_url, redis)
    before = await snapshot(redis, LEGACY, chats)
    jobs_before = await queued_jobs(redis, LEGACY)
    migration = LayoutMigration(redis, FOUR)
    moves = migration._move_lane_job

    async def dies_after_one(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(migration, "_move_lane_job", failing)  # the next one: it dies
        return await moves(*args, **kwargs)

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("killed mid-migration")

    monkeypatch.setattr(migration, "_move_lane_job", dies_after_one)
    with pytest.raises(BusUnavailable):
        await migration.run()
    # Half done: some lanes moved, the rest still in the legacy queue; nothing lost.
    assert len(await queued_jobs(redis, FOUR)) + len(await queued_jobs(redis, LEGACY)) == 6

    report = await LayoutMigration(redis, FOUR).run()
    assert report.jobs["lane"] == 3  # the ones left: none moved twice
    assert await snapshot(redis, FOUR, chats) == before
    assert await queued_jobs(redis, FOUR) == jobs_before
    assert await queued_jobs(redis, LEGACY) == []
    assert not (await LayoutMigration(redis, FOUR).run()).changed

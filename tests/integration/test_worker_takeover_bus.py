"""The bus pieces of a fast takeover after a worker dies (real redis-server): liveness by
Redis's clock, its jobs claimed at once and exactly once, its chat leases taken over."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from bus.chatlog import ChatLog
from bus.jobs import JobQueue
from bus.keys import BusKeys
from bus.lease import ChatLease
from bus.presence import Presence
from bus.schemas import WorkerHeartbeat
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

KEYS = BusKeys()


def beat(consumer: str) -> WorkerHeartbeat:
    return WorkerHeartbeat(consumer=consumer, seen_at_ms=int(time.time() * 1000))


async def test_a_worker_that_stops_beating_is_departed_by_redis_clock(redis_client: Redis) -> None:
    presence = Presence(redis_client, KEYS)
    await presence.beat(beat("dies"), alive_ms=200)
    await presence.beat(beat("lives"), alive_ms=60_000)
    assert await presence.departed() == []
    departed = await wait_until(lambda: _departed(presence), timeout=5, message="liveness to lapse")
    assert departed == ["dies"]
    await presence.forget("dies")
    assert await presence.departed() == []


async def _departed(presence: Presence) -> list[str] | None:
    return await presence.departed() or None


async def test_a_departed_workers_jobs_are_taken_over_once(redis_client: Redis) -> None:
    log = ChatLog(redis_client, KEYS)
    dead = JobQueue(redis_client, KEYS, "dead")
    await dead.ensure_group()
    for i in range(5):
        await log.accept_visitor_message(f"c{i}", "hi")
    held = await dead.take(5)
    assert len(held) == 5
    heirs = [JobQueue(redis_client, KEYS, f"heir{i}") for i in range(3)]
    results = await asyncio.gather(*(heir.take_over("dead") for heir in heirs))
    claimed = [d.entry_id for result in results for d in result]
    assert sorted(claimed) == sorted(d.entry_id for d in held)  # each exactly once
    assert all(d.deliveries == 2 and d.job is not None for r in results for d in r)
    assert await heirs[0].take_over("dead") == []


async def test_a_departed_workers_lease_is_taken_at_once(redis_client: Redis) -> None:
    dead = ChatLease(redis_client, KEYS, "dead", ttl_ms=60_000)
    heir = ChatLease(redis_client, KEYS, "heir", ttl_ms=60_000)
    assert await dead.acquire("c")
    assert not await heir.acquire("c")
    assert not await heir.acquire("c", departed=["someone-else"])
    assert await heir.acquire("c", departed=["dead"])
    assert not await dead.acquire("c")

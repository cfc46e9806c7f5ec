"""The jobs stream never drops an accepted job: the backlog is capped at enqueue time, and
workers trim only finished jobs (real redis-server)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bus.chatlog import ChatLimits, ChatLog
from bus.errors import BacklogFull
from bus.jobs import JobQueue
from bus.keys import BusKeys
from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration

KEYS = BusKeys()
CAP = 20


async def test_a_full_backlog_refuses_new_messages_and_drops_no_accepted_job(
    redis_client: Redis,
) -> None:
    log = ChatLog(redis_client, KEYS, ChatLimits(jobs_maxlen=CAP))
    queue = JobQueue(redis_client, KEYS, "w1")
    await queue.ensure_group()
    accepted = [
        (await log.accept_visitor_message(f"c{i}", f"hello {i}")).job_id for i in range(CAP)
    ]
    with pytest.raises(BacklogFull):
        await log.accept_visitor_message("late", "one too many")
    assert await log.history("late", 10) == []  # nothing of the refused message was stored

    # Every accepted job is still there, in order, for the workers.
    deliveries = await queue.take(CAP + 10)
    assert [d.job.job_id for d in deliveries if d.job] == accepted

    # Finished jobs are trimmed when acked; pending ones stay; room comes back.
    for delivery in deliveries[:5]:
        await queue.ack(delivery.entry_id)
    assert await redis_client.xlen(KEYS.jobs_stream(0)) == CAP - 5
    assert (await redis_client.xpending(KEYS.jobs_stream(0), KEYS.jobs_group))["pending"] == CAP - 5
    await log.accept_visitor_message("late", "now there is room")


async def test_trimming_never_drops_a_job_not_yet_delivered(redis_client: Redis) -> None:
    log = ChatLog(redis_client, KEYS, ChatLimits(jobs_maxlen=CAP))
    queue = JobQueue(redis_client, KEYS, "w1")
    await queue.ensure_group()
    for i in range(3):
        await log.accept_visitor_message("c", f"first {i}")
    first = await queue.take(3)
    for i in range(4):
        await log.accept_visitor_message("c", f"waiting {i}")
    for delivery in first:
        await queue.ack(delivery.entry_id)
    waiting = await queue.take(10)
    assert [d.job.message_id for d in waiting if d.job] != []
    assert len(waiting) == 4


async def test_dead_letter_is_copied_and_acked_in_one_step(redis_client: Redis) -> None:
    log = ChatLog(redis_client, KEYS, ChatLimits(jobs_maxlen=CAP))
    queue = JobQueue(redis_client, KEYS, "w1")
    await queue.ensure_group()
    await log.accept_visitor_message("c", "doomed")
    (delivery,) = await queue.take(1)
    await queue.dead_letter(delivery, "delivered too often")
    (entry,) = await redis_client.xrange(KEYS.dead_letters_stream(0))
    assert entry[1]["reason"] == "delivered too often"
    assert entry[1]["entry_id"] == delivery.entry_id
    assert (await redis_client.xpending(KEYS.jobs_stream(0), KEYS.jobs_group))["pending"] == 0
    assert await redis_client.xlen(KEYS.jobs_stream(0)) == 0


async def test_the_gateway_answers_503_with_retry_after_when_the_backlog_is_full(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    server = TestServer(create_app(gateway_settings(redis_server.url, jobs_maxlen=2)))
    await server.start_server()
    try:
        url = str(server.make_url("/api/chat/full/messages"))
        async with aiohttp.ClientSession() as session:
            for i in range(2):
                body = {"content": f"m{i}", "accessCode": ACCESS_CODE}
                async with session.post(url, json=body) as response:
                    assert response.status == 200
            body = {"content": "third", "accessCode": ACCESS_CODE, "clientMessageId": "x-3"}
            async with session.post(url, json=body) as response:
                assert response.status == 503
                assert int(response.headers["Retry-After"]) > 0
                assert "try again" in (await response.json())["error"]
    finally:
        await server.close()
    waiting = int(await redis_client.get(KEYS.queue_waiting(0)) or 0)  # in the client's lane
    assert await redis_client.xlen(KEYS.jobs_stream(0)) + waiting == 2

"""Fair scheduling (issue 11): jobs are served round robin across clients, one client's
backlog is capped, and no delivery guarantee is given up (real redis-server, real worker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bus import BusKeys, ChatLog, JobQueue, TooManyWaiting
from bus.chatlog import ChatLimits
from demo.agent import DemoAgentConfig, run_demo_agent
from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.agent import agent_requests
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from worker import Worker

pytestmark = pytest.mark.integration

KEYS = BusKeys()
FLOOD = "198.51.100.7"
VISITOR = "203.0.113.9"


@pytest.fixture
async def gateway_behind_proxy(redis_server: RedisServer) -> AsyncIterator[TestServer]:
    """A gateway that takes the client from X-Forwarded-For (as behind nginx)."""
    settings = gateway_settings(
        redis_server.url, TRUSTED_PROXIES="127.0.0.1", max_queued_per_client=10
    )
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def post(
    server: TestServer, chat_id: str, content: str, client: str, **extra: Any
) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            str(server.make_url(f"/api/chat/{chat_id}/messages")),
            json={"content": content, "accessCode": ACCESS_CODE, **extra},
            headers={"X-Forwarded-For": client},
        ) as response,
    ):
        await response.read()
        return response


def first_asked(requests: list[dict[str, Any]]) -> list[str]:
    """Each visitor message's text, in the order the agent was first asked about it."""
    seen: list[str] = []
    for request in requests:
        users = [m["content"] for m in request["messages"] if m.get("role") == "user"]
        if users and users[-1] not in seen:
            seen.append(str(users[-1]))
    return seen


async def test_another_visitor_is_served_after_at_most_one_job_of_a_flooding_client(
    redis_server: RedisServer, gateway_behind_proxy: TestServer
) -> None:
    for i in range(6):
        response = await post(gateway_behind_proxy, f"flood{i}", f"flood {i}", FLOOD)
        assert response.status == 200
    response = await post(gateway_behind_proxy, "visitor", "visitor's question", VISITOR)
    assert response.status == 200

    async with run_demo_agent(DemoAgentConfig(token_delay_ms=1)) as agent_url:
        settings = fast_settings(redis_server.url, agent_url, max_concurrent_chats=1)
        async with Worker(settings):

            async def all_asked() -> list[str] | None:
                order = first_asked(await agent_requests(agent_url))
                return order if len(order) == 7 else None

            order = await wait_until(all_asked, timeout=30, message="7 messages answered")
    # FIFO would ask about the visitor's message last (7th); round robin at most 2nd
    # (one flood job was already ready in the stream when the visitor posted).
    assert order.index("visitor's question") <= 1, order
    assert [text for text in order if text.startswith("flood")] == [f"flood {i}" for i in range(6)]


async def test_a_client_with_its_cap_of_messages_waiting_gets_429_and_others_do_not(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    settings = gateway_settings(
        redis_server.url, TRUSTED_PROXIES="127.0.0.1", max_queued_per_client=3
    )
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        statuses = [(await post(server, f"c{i}", f"m{i}", FLOOD)).status for i in range(5)]
        # One job is ready in the stream at once; three more wait in the client's lane.
        assert statuses == [200, 200, 200, 200, 429]
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                str(server.make_url("/api/chat/c9/messages")),
                json={"content": "one more", "accessCode": ACCESS_CODE},
                headers={"X-Forwarded-For": FLOOD},
            ) as refused,
        ):
            assert refused.status == 429
            assert int(refused.headers["Retry-After"]) > 0
            error = (await refused.json())["error"]
            assert "3 messages waiting" in error
            assert "try again" in error
        assert await ChatLog(redis_client, KEYS).history("c9", 10) == []  # nothing stored
        assert (await post(server, "other", "hello", VISITOR)).status == 200
    finally:
        await server.close()


async def test_a_chat_keeps_its_order_when_its_visitor_changes_network(
    redis_client: Redis,
) -> None:
    log = ChatLog(redis_client, KEYS, ChatLimits(queued_per_client=10))
    queue = JobQueue(redis_client, KEYS, "w1")
    await queue.ensure_group()
    await log.accept_visitor_message("busy", "ready first", client="other")
    for i in range(3):
        await log.accept_visitor_message("moving", f"wifi {i}", client="wifi")
    for i in range(3):  # same chat, now from the phone network
        await log.accept_visitor_message("moving", f"mobile {i}", client="mobile")
    taken = await queue.take(20)
    moving = [
        (await log.history("moving", 10), d.job.message_id)
        for d in taken
        if d.job is not None and d.job.chat_id == "moving"
    ]
    ids = [message_id for _, message_id in moving]
    history = {m["id"]: m["content"] for m in moving[0][0]}
    assert [history[i] for i in ids] == [f"wifi {i}" for i in range(3)] + [
        f"mobile {i}" for i in range(3)
    ]


async def test_no_job_is_lost_between_lanes_and_stream_under_concurrent_takes(
    redis_client: Redis,
) -> None:
    log = ChatLog(redis_client, KEYS, ChatLimits(queued_per_client=1000))
    queues = [JobQueue(redis_client, KEYS, f"w{i}") for i in range(4)]
    await queues[0].ensure_group()

    async def accept(client: int) -> list[str]:
        ids = []
        for i in range(40):
            accepted = await log.accept_visitor_message(
                f"c{client}-{i % 3}", f"m{i}", client=f"client{client}"
            )
            ids.append(str(accepted.job_id))
        return ids

    async def drain(queue: JobQueue, seen: list[str], done: asyncio.Event) -> None:
        while True:
            deliveries = await queue.take(2)
            for delivery in deliveries:
                assert delivery.job is not None
                seen.append(delivery.job.job_id)
                await queue.ack(delivery.entry_id)
            if not deliveries:
                if done.is_set():
                    return
                await asyncio.sleep(0.001)

    seen: list[str] = []
    done = asyncio.Event()
    drains = [asyncio.create_task(drain(q, seen, done)) for q in queues]
    accepted = await asyncio.gather(*(accept(c) for c in range(5)))
    done.set()
    await asyncio.gather(*drains)
    # What the drains saw, plus anything they left, is exactly what was accepted, once each.
    for delivery in await queues[0].take(1000):
        assert delivery.job is not None
        seen.append(delivery.job.job_id)
    assert sorted(seen) == sorted(job for ids in accepted for job in ids)
    assert int(await redis_client.get(KEYS.queue_waiting(0)) or 0) == 0
    assert await redis_client.zcard(KEYS.queue_ring(0)) == 0


async def test_the_client_cap_counts_only_that_clients_waiting_jobs(
    redis_client: Redis,
) -> None:
    log = ChatLog(redis_client, KEYS, ChatLimits(queued_per_client=2))
    await JobQueue(redis_client, KEYS, "w1").ensure_group()
    await log.accept_visitor_message("a", "ready", client="a")  # goes straight to the stream
    await log.accept_visitor_message("a", "waits 1", client="a")
    await log.accept_visitor_message("a", "waits 2", client="a")
    with pytest.raises(TooManyWaiting) as refused:
        await log.accept_visitor_message("a", "refused", client="a")
    assert refused.value.waiting == 2
    await log.accept_visitor_message("b", "fine", client="b")


async def test_the_lanes_keep_no_client_address_in_clear(
    gateway_behind_proxy: TestServer, redis_client: Redis
) -> None:
    for i in range(3):
        assert (await post(gateway_behind_proxy, f"plain{i}", "hi", FLOOD)).status == 200
    queue_keys = [str(k) async for k in redis_client.scan_iter(match=f"{KEYS.prefix}:queue:*")]
    assert any(k.startswith(KEYS.queue_lane_prefix(0)) for k in queue_keys)
    assert not [k for k in queue_keys if FLOOD in k]
    for chat in ("plain0", "plain1", "plain2"):
        assert FLOOD not in str(await redis_client.hgetall(KEYS.chat_meta(chat)))  # type: ignore[misc]

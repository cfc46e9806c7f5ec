"""The worker writes chats with the deployment's storage policy, not the bus's defaults.

Before the worker took its bus from ``open_worker_bus``, it built its chat log with default
limits: every chunk it wrote reset a chat's TTL to 7 days and trimmed its log to about 5000
events, whatever ``CHAT_RETENTION_HOURS`` and ``EVENTS_MAXLEN`` said.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bus import BusKeys, ChatLog
from bus.client import create_redis
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from worker import Worker

pytestmark = pytest.mark.integration

KEYS = BusKeys()
RETENTION_HOURS = 1.0


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url, client_name="test")
    try:
        yield client
    finally:
        await client.aclose()


async def test_worker_writes_keep_the_configured_retention(
    redis_server: RedisServer, agent_url: str, redis: Redis
) -> None:
    settings = fast_settings(
        redis_server.url, agent_url, chat_retention_hours=RETENTION_HOURS, events_maxlen=20_000
    )
    # the gateway's side of the same deployment: the same settings, the same policy
    gateway_log = ChatLog(redis, KEYS, settings.limits)
    accepted = await gateway_log.accept_visitor_message("policy", "[[demo:tokens=30]] hi")
    message_id = str(accepted.message["id"])

    async with Worker(settings):

        async def answered() -> bool:
            return await gateway_log.reply_event_id("policy", message_id) is not None

        await wait_until(answered, message="the reply")

    limit_ms = RETENTION_HOURS * 3600 * 1000
    for key in (KEYS.chat_events("policy"), KEYS.chat_messages("policy")):
        ttl_ms = await redis.pttl(key)
        assert 0 < ttl_ms <= limit_ms, f"{key} expires in {ttl_ms} ms"

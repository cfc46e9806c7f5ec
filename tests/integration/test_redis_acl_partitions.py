"""The committed users.acl serves the partitioned key layout too (REDIS_PARTITIONS=4, issue 13):
over TLS, as the gateway and worker users, a visitor message accepted into its chat's
partition is answered by a real Worker; the worker's grants reach none of a chat's
idempotency records or rate buckets in that layout either."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from redis.exceptions import NoPermissionError

from bus import BusKeys, ChatLog, Presence
from bus.client import RedisOptions, create_redis
from bus.thoughts import read_thoughts
from demo.agent import DemoAgentConfig, run_demo_agent
from tests.integration.test_redis_acl_tls import RedisTLS, redis_tls  # noqa: F401 (fixture)
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from worker import Worker

pytestmark = pytest.mark.integration

KEYS = BusKeys("terra", 4)


def dsn(server: RedisTLS, user: str) -> str:
    password = quote(server.passwords[user][0], safe="")
    return f"rediss://{user}:{password}@localhost:{server.port}/0"


def client_options(server: RedisTLS, user: str) -> RedisOptions:
    cert = server.cert(user)
    return RedisOptions(
        ssl_ca_certs=server.ca, ssl_certfile=cert["ssl_certfile"], ssl_keyfile=cert["ssl_keyfile"]
    )


async def test_gateway_and_worker_run_the_partitioned_layout_with_their_users(
    redis_tls: RedisTLS,  # noqa: F811
) -> None:
    gateway = create_redis(
        dsn(redis_tls, "gateway"),
        client_name="test-gateway",
        options=client_options(redis_tls, "gateway"),
    )
    log = ChatLog(gateway, KEYS)
    try:
        async with run_demo_agent(DemoAgentConfig(token_delay_ms=1)) as agent_url:
            settings = fast_settings(
                dsn(redis_tls, "worker"),
                agent_url,
                redis_ca_cert=redis_tls.ca,
                redis_client_cert=redis_tls.cert("worker")["ssl_certfile"],
                redis_client_key=redis_tls.cert("worker")["ssl_keyfile"],
                worker_name="tls-partitions-worker",
                redis_partitions=4,
            )
            async with Worker(settings):
                accepted = {}
                for chat_id in ("tls-a", "tls-b", "tls-c", "tls-d"):
                    accepted[chat_id] = await log.accept_visitor_message(
                        chat_id,
                        "[[demo:echo]] partitioned",
                        client_message_id="m1",
                        client="192.0.2.1",
                    )
                # A retry: the client's bytes charged, then given back, as the gateway user.
                await log.accept_visitor_message(
                    "tls-a", "[[demo:echo]] partitioned", client_message_id="m1", client="192.0.2.1"
                )

                async def replied() -> bool:
                    for chat_id, message in accepted.items():
                        if await log.reply_event_id(chat_id, message.message["id"]) is None:
                            return False
                    return True

                await wait_until(replied, timeout=20, message="every reply over TLS")
                assert await Presence(gateway, KEYS).freshest() is not None
        assert len({KEYS.partition_of(c) for c in accepted}) > 1
        for chat_id in accepted:
            history = await log.history(chat_id)
            assert [m["content"] for m in history] == ["[[demo:echo]] partitioned", "partitioned"]
            span = history[0]["eventId"], history[-1]["eventId"]
            assert await read_thoughts(gateway, KEYS, chat_id, *span) == {}
    finally:
        await gateway.aclose()

    worker = create_redis(
        dsn(redis_tls, "worker"),
        client_name="test-worker",
        options=client_options(redis_tls, "worker"),
    )
    try:
        for name in (KEYS.chat_idempotency("tls-a", "m1"), KEYS.chat_budget("tls-a")):
            with pytest.raises(NoPermissionError):
                await worker.get(name)
    finally:
        await worker.aclose()

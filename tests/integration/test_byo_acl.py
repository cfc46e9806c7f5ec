"""The gateway's BYO writes run as its least-privileged Redis user (infra/redis/users.acl),
over TLS: the accept and lease scripts, chunks, the stop flag and the finish script."""

from __future__ import annotations

import uuid

import pytest

from bus import BusSettings, GatewayBus
from tests.integration.test_redis_acl_tls import Connect, connect, redis_tls  # noqa: F401

pytestmark = pytest.mark.integration


async def test_byo_writes_run_as_the_gateway_user(connect: Connect) -> None:  # noqa: F811
    redis = connect("gateway", client_name="terrarium-gateway")
    bus = GatewayBus(redis, BusSettings.model_validate({"redis_url": "rediss://unused"}))
    chat = f"acl-byo-{uuid.uuid4().hex[:8]}"
    accepted = await bus.accept_byo_message(
        chat, "hello", provider="Fake AI", model="echo", lease_ms=10_000, client="203.0.113.7"
    )  # with a client, as the gateway calls it: its daily bytes counter is written too
    message_id = str(accepted.message["id"])
    assert await bus.chat_mode(chat) == "byo"
    assert await bus.renew_byo_lease(chat, message_id, 10_000)
    assert not await bus.append_byo_chunk(chat, message_id, "Hel")
    assert not await bus.byo_stop_requested(chat, message_id)
    assert await bus.stop_reply(chat, None) == message_id
    assert await bus.byo_stop_requested(chat, message_id)
    answer = await bus.finish_byo_reply(
        chat, message_id, "Hel", provider="Fake AI", model="echo", status="stopped"
    )
    assert (answer["content"], answer["status"], answer["provider"]) == (
        "Hel",
        "stopped",
        "Fake AI",
    )
    history = await bus.history(chat, 10)
    assert [m["sender"] for m in history] == ["Visitor", "Terra"]

"""The chat log's writes on a TLS + ACL Redis Cluster as the users that make them (issue 13):
the gateway accepts (message, job and the client's bytes) and the worker answers (state,
chunks alone and batched, tool turns, the final reply, its heartbeat) over ``rediss://``
with their own certificates, for chats on every master; the worker still reaches no
idempotency record or rate bucket. Users and rules are the committed ``users.acl``."""

from __future__ import annotations

import pytest
from redis.crc import key_slot
from redis.exceptions import NoPermissionError

from bus import BusKeys, ChatLog, Presence
from bus.client import RedisOptions, create_redis
from bus.schemas import WorkerHeartbeat
from tests.support.redis_cluster import RedisCluster

pytestmark = pytest.mark.integration

KEYS = BusKeys("terra", 16, cluster=True)


def log_as(cluster: RedisCluster, passwords: dict[str, str], user: str) -> ChatLog:
    tls = cluster.tls
    assert tls is not None
    seed = cluster.live_nodes()[0]
    redis = create_redis(
        f"rediss://{user}:{passwords[user]}@localhost:{seed.port}/0",
        client_name=f"test-{user}",
        options=RedisOptions(
            ssl_ca_certs=str(tls.ca),
            ssl_certfile=str(tls.ca.parent / f"{user}.crt"),
            ssl_keyfile=str(tls.ca.parent / f"{user}.key"),
        ),
        cluster=True,
    )
    return ChatLog(redis, KEYS)


async def test_gateway_and_worker_write_chats_on_every_master_as_their_users(
    secure_cluster: tuple[RedisCluster, dict[str, str]],
) -> None:
    cluster, passwords = secure_cluster
    owners = cluster.slot_owners()
    chats: dict[str, str] = {}  # one chat per master
    n = 0
    while len(chats) < 3:
        chat_id = f"acl-{n}"
        n += 1
        chats.setdefault(owners[key_slot(KEYS.chat_meta(chat_id).encode())].address, chat_id)
    gateway = log_as(cluster, passwords, "gateway")
    worker = log_as(cluster, passwords, "worker")
    try:
        asked = {}
        for chat_id in chats.values():
            accepted = await gateway.accept_visitor_message(
                chat_id, "hello", client_message_id="m1", client="192.0.2.20"
            )
            asked[chat_id] = accepted.message["id"]
            await worker.begin_reply(chat_id, asked[chat_id])
            await worker.append_chunk(chat_id, asked[chat_id], "hel")
            await worker.save_tool_turns(chat_id, asked[chat_id], [{"role": "tool"}])
        results = await worker.append_chunks([(c, asked[c], "lo") for c in chats.values()])
        assert all(isinstance(r, tuple) for r in results), results
        for chat_id in chats.values():
            _frame, duplicate = await worker.finish_reply(chat_id, asked[chat_id], "hello")
            assert not duplicate
            history = await gateway.history(chat_id)
            assert [m["sender"] for m in history] == ["Visitor", "Terra"]
        heartbeat = WorkerHeartbeat(consumer="acl-worker", seen_at_ms=1)
        await Presence(worker.redis, KEYS).beat(heartbeat, alive_ms=5000)
        assert await Presence(gateway.redis, KEYS).freshest() is not None
        chat_id = next(iter(chats.values()))
        for name in (KEYS.chat_idempotency(chat_id, "m1"), KEYS.chat_budget(chat_id)):
            with pytest.raises(NoPermissionError):
                await worker.redis.get(name)
    finally:
        await gateway.redis.aclose()
        await worker.redis.aclose()

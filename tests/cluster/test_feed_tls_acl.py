"""The sharded feed on a TLS + ACL cluster: its node connections are the gateway's.

A 3-master cluster with TLS on every port and the committed ACL (``render-acl.sh`` on
``infra/redis/users.acl``); the feed runs as the ``gateway`` user over ``rediss://`` with
its client certificate, as ``open_gateway_bus`` builds the client. Its own per-node
connections must log in as that user, verify the nodes' certificates and carry the
client name, and the gateway's ACL must allow what they do (CLUSTER SLOTS, SSUBSCRIBE).
"""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from bus.chatlog import ChatLog
from bus.client import RedisOptions, create_redis
from bus.keys import BusKeys
from bus.pubsub import ChatFeed
from tests.support.redis_cluster import RedisCluster

pytestmark = [pytest.mark.integration]

KEYS = BusKeys("terra", 16, cluster=True)
QUEUED = '{"type":"workerState","state":"queued"}'
NAME = "terrarium-gateway-feed"


async def test_the_feed_subscribes_every_master_as_the_gateway_over_tls(
    secure_cluster: tuple[RedisCluster, dict[str, str]],
) -> None:
    cluster, passwords = secure_cluster
    certs = cluster.tls
    assert certs is not None
    owners = cluster.slot_owners()
    chats: dict[str, str] = {}  # one chat per master
    n = 0
    while len(chats) < 3:
        chat_id = f"secure-{n}"
        n += 1
        chats.setdefault(owners[key_slot(KEYS.chat_channel(chat_id).encode())].address, chat_id)
    seed = cluster.live_nodes()[0]
    redis = create_redis(
        f"rediss://gateway:{passwords['gateway']}@localhost:{seed.port}/0",
        client_name=NAME,
        options=RedisOptions(
            ssl_ca_certs=str(certs.ca),
            ssl_certfile=str(certs.server_cert.parent / "gateway.crt"),
            ssl_keyfile=str(certs.server_cert.parent / "gateway.key"),
        ),
        cluster=True,
    )
    log = ChatLog(redis, KEYS)
    feed = ChatFeed(redis, KEYS, log)
    feed.start()
    try:
        async with asyncio.timeout(30):
            listeners = [await feed.open_listener(chat_id) for chat_id in chats.values()]
            appended = [await log.append_event(chat_id, QUEUED) for chat_id in chats.values()]
            received = [(await listener.get()).event_id for listener in listeners]
        assert received == appended
        assert sorted(feed.nodes) == sorted(chats)
        for node in cluster.masters():
            clients = str(cluster.command(node, "CLIENT", "LIST", "TYPE", "pubsub"))
            feed_lines = [line for line in clients.splitlines() if f"name={NAME}" in line]
            assert len(feed_lines) == 1, clients
            assert "user=gateway" in feed_lines[0]
            assert "ssub=1" in feed_lines[0]
        assert feed.reconnects == 0
    finally:
        await feed.close()
        await redis.aclose()

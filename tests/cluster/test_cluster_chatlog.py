"""The chat log's writes and reads on a real 3-master Redis Cluster, chats on every master
(issue 13): accept stores the message and enqueues its job in the chat's partition in one
script, chunks (alone and batched across nodes), tool turns, the final reply, history and
resume checks, BYO accepts, a client's rate buckets; the scripts SPUBLISH (no cluster-bus
relay per event); and a plain client at the wrong node is reported as misconfigured."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bus import BusKeys, ChatLog
from bus.byo import ByoLog
from bus.chatlog import ChatLimits
from bus.client import RedisOptions, create_redis, is_cluster_client
from bus.errors import misconfigurations
from bus.ratelimit import Budget, RateLimiter
from bus.schemas import decode_job
from gateway.app import create_app
from gateway.keys import AppKeys
from tests.integration.conftest import gateway_settings
from tests.support.redis_cluster import RedisCluster
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from worker.__main__ import run

pytestmark = pytest.mark.integration

KEYS = BusKeys("terra", 16, cluster=True)


def chats_on_every_master(
    cluster: RedisCluster, per_master: int = 2, prefix: str = "chat"
) -> list[str]:
    """Chat ids whose partition lives on each master, ``per_master`` each."""
    found: dict[str, list[str]] = {m.node_id: [] for m in cluster.masters()}
    i = 0
    while any(len(v) < per_master for v in found.values()):
        chat_id = f"{prefix}-{i}"
        owner = cluster.node_for_key(KEYS.chat_meta(chat_id)).node_id
        if len(found[owner]) < per_master:
            found[owner].append(chat_id)
        i += 1
    return [c for chats in found.values() for c in chats]


@pytest.fixture
async def log(redis_cluster: RedisCluster) -> AsyncIterator[ChatLog]:
    redis = create_redis(redis_cluster.url, client_name="test-cluster-log", cluster=True)
    assert is_cluster_client(redis)
    try:
        yield ChatLog(redis, KEYS, ChatLimits())
    finally:
        await redis.aclose()


def publish_relays(cluster: RedisCluster) -> int:
    """Classic PUBLISH messages the cluster bus relayed between nodes so far."""
    total = 0
    for node in cluster.masters():
        info = cluster.command(node, "CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        match = re.search(r"cluster_stats_messages_publish_sent:(\d+)", text)
        total += int(match.group(1)) if match else 0
    return total


async def test_a_chats_whole_exchange_runs_on_every_master(
    log: ChatLog, redis_cluster: RedisCluster
) -> None:
    chats = chats_on_every_master(redis_cluster)
    redis = log.redis
    relays = publish_relays(redis_cluster)
    for chat_id in chats:
        accepted = await log.accept_visitor_message(
            chat_id, "hello", client_message_id="m-1", client="192.0.2.7"
        )
        assert not accepted.duplicate
        again = await log.accept_visitor_message(
            chat_id, "hello", client_message_id="m-1", client="192.0.2.7"
        )
        assert again.duplicate  # the idempotency record is in the chat's slot too
        # The job went to the chat's own partition: its lane, or its stream once promoted.
        part = KEYS.partition_of(chat_id)
        stream = await redis.xrange(KEYS.jobs_stream(part))
        assert [decode_job(f["d"]).chat_id for _, f in stream] == [chat_id]
        visitor_id = accepted.message["id"]
        await log.begin_reply(chat_id, visitor_id)
        await log.append_chunk(chat_id, visitor_id, "par")
        await log.save_tool_turns(chat_id, visitor_id, [{"role": "tool", "content": "x"}])
        assert await log.tool_turns(chat_id, [visitor_id]) == {
            visitor_id: [{"role": "tool", "content": "x"}]
        }
    # One batch of chunks for chats on all three masters: one pipeline per node.
    ids = {c: (await log.history(c))[0]["id"] for c in chats}
    results = await log.append_chunks([(c, ids[c], "tial") for c in chats])
    assert all(isinstance(r, tuple) for r in results), results
    for chat_id in chats:
        _reply, duplicate = await log.finish_reply(chat_id, ids[chat_id], "partial")
        assert not duplicate
        history = await log.history(chat_id)
        assert [m["sender"] for m in history] == ["Visitor", "Terra"]
        assert history[1]["replyTo"] == ids[chat_id]
        await log.check_resume(chat_id, "0-0")
        events = await log.events_after(chat_id, "0-0")
        assert [e.type for e in events][-3:] == ["message", "assistantChunk", "workerState"]
    # Every event went out with SPUBLISH: nothing relayed over the cluster bus.
    assert publish_relays(redis_cluster) == relays


async def test_scripts_spublish_to_the_chats_shard_channel(
    log: ChatLog, redis_cluster: RedisCluster
) -> None:
    chat_id = chats_on_every_master(redis_cluster, 1)[2]
    node = redis_cluster.node_for_key(KEYS.chat_channel(chat_id))
    sub = redis_cluster.client(node)
    pubsub = sub.pubsub()  # type: ignore[no-untyped-call]
    pubsub.execute_command("SSUBSCRIBE", KEYS.chat_channel(chat_id))
    try:
        event_id = await log.set_worker_state(chat_id, "processing")

        def smessage() -> list[Any] | None:
            reply = pubsub.parse_response(block=False, timeout=5.0)
            while reply is not None and reply[0] in (b"ssubscribe", "ssubscribe"):
                reply = pubsub.parse_response(block=False, timeout=5.0)
            return None if reply is None else list(reply)

        reply = await asyncio.to_thread(smessage)
        assert reply is not None
        kind, channel, data = (x.decode() if isinstance(x, bytes) else x for x in reply)
        assert kind == "smessage"
        assert channel == KEYS.chat_channel(chat_id)
        assert data.split(" ", 2)[1] == event_id
    finally:
        pubsub.close()
        sub.close()


async def test_byo_accepts_and_rate_buckets_stay_in_one_slot(
    log: ChatLog, redis_cluster: RedisCluster
) -> None:
    byo = ByoLog(log.redis, log)
    for chat_id in chats_on_every_master(redis_cluster, 1):
        accepted = await byo.accept(
            f"byo-{chat_id}", "hi", provider="p", model="m", lease_ms=5000, client="192.0.2.8"
        )
        assert accepted.orphan is None
    limiter = RateLimiter(log.redis)
    decisions = await limiter.spend(
        [
            (KEYS.client_budget("post", "192.0.2.8"), Budget(5, 60_000), 1),
            (KEYS.client_budget("failed-code", "192.0.2.8"), Budget(5, 60_000), 0),
        ]
    )
    assert [d.allowed for d in decisions] == [True, True]


async def test_a_plain_client_at_the_wrong_node_is_misconfigured_not_unreachable(
    redis_cluster: RedisCluster,
) -> None:
    """REDIS_CLUSTER unset against a cluster: the shipped gateway said "unreachable"."""
    seed = redis_cluster.masters()[0]
    legacy = BusKeys("terra")
    chat_id = next(
        f"moved-{i}"
        for i in range(1000)
        if redis_cluster.node_for_key(legacy.chat_messages(f"moved-{i}")) is not seed
    )
    before = misconfigurations()["MOVED"]
    server = TestServer(create_app(gateway_settings(redis_cluster.node_url(seed))))
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                server.make_url(f"/api/chat/{chat_id}/messages"),
                params={"accessCode": ACCESS_CODE},
            ) as resp,
        ):
            assert resp.status == 503
            error = (await resp.json())["error"]
        # The chat's keys are on another node (MOVED); the route's two rate buckets of the
        # legacy layout are on two slots (CROSSSLOT): either way, misconfigured.
        assert "misconfigured" in error
        assert re.search(r"\((MOVED|CROSSSLOT)\)", error), error
        assert misconfigurations()["MOVED"] == before + 1
    finally:
        await server.close()


async def test_a_worker_at_a_cluster_node_without_redis_cluster_refuses_to_start(
    redis_cluster: RedisCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped worker exited with a MOVED traceback; now one line says what to set."""
    owner = redis_cluster.node_for_key(BusKeys("terra").jobs_stream(0))
    elsewhere = next(m for m in redis_cluster.masters() if m is not owner)
    settings = fast_settings(redis_cluster.node_url(elsewhere), "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as stopped:
        await run(settings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "worker: invalid configuration: REDIS_URL (Redis refused the command (MOVED)"
    )
    assert "REDIS_CLUSTER=true" in err


async def test_a_cluster_gateway_serves_chats_on_every_master_and_shows_the_spread(
    redis_cluster: RedisCluster,
) -> None:
    """REDIS_CLUSTER=true at one node: POST and a live WebSocket for chats on every master;
    /metrics shows the chats the feed follows per node."""
    chats = chats_on_every_master(redis_cluster, 1, prefix="gw")
    settings = gateway_settings(redis_cluster.url, redis_cluster=True, rate_limit_max_per_ip=1000)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            sockets = [
                await http.ws_connect(
                    server.make_url(f"/api/chat?chatId={chat_id}&accessCode={ACCESS_CODE}")
                )
                for chat_id in chats
            ]
            for chat_id, ws in zip(chats, sockets, strict=True):
                async with http.post(
                    server.make_url(f"/api/chat/{chat_id}/messages"),
                    json={"content": f"hi {chat_id}", "accessCode": ACCESS_CODE},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                frame = await ws.receive_json(timeout=10)
                while frame.get("content") != f"hi {chat_id}":
                    frame = await ws.receive_json(timeout=10)
            async with http.get(server.make_url("/metrics")) as resp:
                text = await resp.text()
            for ws in sockets:
                await ws.close()
        nodes = re.findall(r'^terrarium_feed_node_chats\{node="([^"]+)"\} (\S+)$', text, re.M)
        assert {node for node, _ in nodes} == {m.address for m in redis_cluster.masters()}
        assert sorted(float(chats) for _, chats in nodes) == [1.0, 1.0, 1.0]
    finally:
        await server.close()


async def test_a_busy_node_pool_waits_for_a_free_connection(redis_cluster: RedisCluster) -> None:
    """A burst over a node's max_connections waits, as the single-Redis client does (its retry
    covers "Too many connections"): redis-py's cluster client failed it at once
    (MaxConnectionsError, a 503 for the visitor)."""
    client = create_redis(
        redis_cluster.url,
        client_name="test-burst",
        options=RedisOptions(max_connections=2),
        cluster=True,
    )
    try:
        results = await asyncio.gather(*(client.incr("{burst}") for _ in range(50)))
        assert sorted(results) == list(range(1, 51))
    finally:
        await client.aclose()


async def test_a_cluster_gateways_readiness_sends_no_ping_through_the_cluster_client(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PING goes to the client's default node; were it a master that just died, redis-py
    would close every connection of the client under the live traffic, on every probe."""
    app = create_app(gateway_settings(redis_cluster.url, redis_cluster=True))
    server = TestServer(app)
    await server.start_server()
    try:
        bus = app[AppKeys.bus]

        async def no_ping() -> None:
            raise AssertionError("readiness pinged through the cluster client")

        monkeypatch.setattr(bus, "ping", no_ping)
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                async with http.get(server.make_url("/readyz")) as resp:
                    return resp.status == 200

            await wait_until(ready, timeout=10, message="a ready cluster gateway")
    finally:
        await server.close()

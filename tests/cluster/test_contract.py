"""The visitor contract on a 3-master Redis Cluster, through real gateways and workers.

Two gateways and two workers run with ``REDIS_CLUSTER=true`` and ``REDIS_URL`` naming one
node; chats are chosen so their keys (and their partitions' jobs) live on every master. The
checks are the guarantee checker's: every socket (WebSocket and SSE, v1 and v2) sees its
chat's log with no gap and no duplicate, across drops and resumes on the other gateway;
every accepted message is stored once and answered exactly once; nothing is left pending.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from redis.crc import key_slot

from bus.chatlog import compare_ids
from tests.cluster.rig import (
    ClusterRig,
    caught_up,
    cluster_rig,
    violations,
    wait_answered,
)
from tests.guarantees.checker import check_run
from tests.guarantees.fleet import KINDS, Fleet
from tests.support.clients import ChatClient, post_message
from tests.support.redis_cluster import RedisCluster
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def rig(
    redis_cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterRig]:
    """Agent, 2 gateways and 2 workers on the module's cluster."""
    with cluster_rig(tmp_path_factory.mktemp("contract"), redis_cluster) as rig:
        yield rig


async def _get(port: int, path: str, **params: str) -> tuple[int, Any]:
    query = {"accessCode": ACCESS_CODE, **params}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", params=query) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_chats_on_every_master_keep_the_visitor_contract(rig: ClusterRig) -> None:
    """POST, WebSocket and SSE (v1 and v2), history; half the sockets cut mid-reply."""
    with rig.logs_on_failure():
        chats = rig.chats_on_every_master(2, "contract")
        for chat_id in chats:  # the chat's partition tag is one slot, on its master
            assert rig.cluster.node_for_key(rig.keys.chat_meta(chat_id)) is rig.node_of_chat(
                chat_id
            )
        assert {rig.node_of_chat(c).node_id for c in chats} == {
            m.node_id for m in rig.cluster.masters()
        }
        fleet = Fleet(random.Random(13), rig.ports)
        try:
            for i, chat_id in enumerate(chats):
                for j, kind in enumerate(KINDS):
                    await fleet.open(chat_id, kind, first_port=(i + j) % 2)
            first = await asyncio.gather(
                *(fleet.post(c, fleet.ledger.content(60), with_client_id=True) for c in chats)
            )
            await asyncio.gather(
                *(fleet.post(c, fleet.ledger.content(20), with_client_id=False) for c in chats),
                *(fleet.repeat(post) for post in first),  # retries: same clientMessageId
            )
            assert await fleet.drop_some(0.5) > 0  # they resume on the other gateway
            snapshot = await wait_answered(rig, fleet.ledger.posts)
            await caught_up(fleet.sockets, snapshot)
        finally:
            await fleet.close()
        _chats, jobs = await rig.snapshot(chats)
        findings = check_run(snapshot, fleet.sockets, fleet.ledger.posts, jobs, [], 0)
        rig.check_logs(findings)
        assert not findings.violations, violations(findings)
        assert findings.frames_checked > 0

        for chat_id in chats:  # the keys are where the slot map says
            owner = rig.node_of_chat(chat_id)
            assert rig.cluster.command(owner, "EXISTS", rig.keys.chat_events(chat_id)) == 1
            stored = [m["id"] for m in snapshot[chat_id].messages]
            assert len(stored) == 4  # 2 visitor messages (one sent twice), 2 replies
            for port in rig.ports:  # history is the same on both gateways
                status, history = await _get(port, f"/api/chat/{chat_id}/messages")
                assert status == 200
                assert [m["id"] for m in history] == stored


async def test_resume_on_the_other_gateway_mid_reply_has_no_gap_and_no_duplicate(
    rig: ClusterRig,
) -> None:
    """A reader leaves gateway 0 in the middle of a reply and resumes on gateway 1 with
    ``lastEventId``: together its two connections saw the chat's log exactly."""
    with rig.logs_on_failure():
        chats = rig.chats_on_every_master(1, "resume")

        async def resume(chat_id: str) -> None:
            first = await ChatClient([rig.ports[0]], chat_id, "ws").start()
            posted = await post_message(rig.ports[0], chat_id, "[[demo:tokens=200]] go on")
            assert posted.status == 200
            await first.wait_for(lambda: len(first.chunks()) >= 5, what="five chunks")
            await first.stop()
            second = ChatClient([rig.ports[1]], chat_id, "sse", after=first.last_event_id)
            await second.start()
            try:
                await second.wait_reply(posted.message_id)
            finally:
                await second.stop()
            async with rig.client() as redis:
                log = await rig.chat(redis, chat_id)
            seen = [f.event_id for f in [*first.frames, *second.frames] if f.event_id]
            assert seen, "no frame at all"
            upto = [e.event_id for e in log.events if compare_ids(e.event_id, seen[-1]) <= 0]
            assert seen == upto  # the handshake started at the log's beginning (a new chat)
            assert second.frames[0].event_id != first.last_event_id

        await asyncio.gather(*(resume(chat_id) for chat_id in chats))


async def test_two_workers_answer_every_message_exactly_once(rig: ClusterRig) -> None:
    """Concurrent posts on 12 chats over all masters, each retried at once on the other
    gateway: every message stored once and answered once, no job left pending."""
    with rig.logs_on_failure():
        chats = rig.chats_on_every_master(4, "once")
        fleet = Fleet(random.Random(7), rig.ports)
        posts = await asyncio.gather(
            *(
                fleet.post(c, fleet.ledger.content(8), with_client_id=True, port_index=n % 2)
                for n, c in enumerate(chats * 3)
            )
        )
        await asyncio.gather(*(fleet.repeat(post) for post in posts))
        snapshot = await wait_answered(rig, fleet.ledger.posts)
        _chats, jobs = await rig.snapshot(chats)
        findings = check_run(snapshot, [], fleet.ledger.posts, jobs, [], 0)
        rig.check_logs(findings)
        assert not findings.violations, violations(findings)
        assert findings.messages_checked == len(chats) * 3


async def test_the_original_front_end_contract(rig: ClusterRig) -> None:
    """v1 (no ``v=2``): POST returns the Message, the socket carries Messages, worker states
    and chunks only, history and worker state read back, health sees the workers."""
    with rig.logs_on_failure():
        chat_id = rig.chats_on_every_master(1, "v1")[-1]
        port = rig.ports[1]
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                f"ws://127.0.0.1:{port}/api/chat",
                params={"chatId": chat_id, "accessCode": ACCESS_CODE},
            )
            posted = await post_message(port, chat_id, "Hello Terra [[demo:tokens=30]]")
            assert posted.status == 200
            message = posted.body
            assert message["sender"] == "Visitor"
            assert message["chatId"] == chat_id
            frames: list[dict[str, Any]] = []
            async with asyncio.timeout(30):
                while not (
                    frames
                    and frames[-1].get("type") == "workerState"
                    and frames[-1]["state"] == "responded"
                ):
                    frames.append(await ws.receive_json())
            await ws.close()
        assert frames[0] == message
        assert {f.get("type", "message") for f in frames} == {
            "message",
            "workerState",
            "assistantChunk",
        }
        replies = [f for f in frames if f.get("sender") == "Terra"]
        assert len(replies) == 1
        chunks = "".join(f["content"] for f in frames if f.get("type") == "assistantChunk")
        assert chunks == replies[0]["content"]

        status, history = await _get(rig.ports[0], f"/api/chat/{chat_id}/messages")
        assert status == 200
        assert history == [message, replies[0]]
        status, state = await _get(rig.ports[0], f"/api/chat/{chat_id}/worker-state")
        assert status == 200
        assert state["state"] == "responded"
        status, health = await _get(rig.ports[0], "/api/health")
        assert status == 200
        assert health["relay"] == "ok"
        assert health["workerReady"] is True


async def test_a_chat_moves_to_another_master_while_it_streams(rig: ClusterRig) -> None:
    """Resharding under traffic: the slot of a streaming chat moves to another master
    (``CLUSTER SETSLOT`` MIGRATING / IMPORTING, ``MIGRATE``, NODE) while messages are posted
    to it; every message is accepted once and answered once, every reader stays exact."""
    with rig.logs_on_failure():
        chat_id = rig.chats_on_every_master(1, "reshard")[0]
        source = rig.node_of_chat(chat_id)
        target = next(m for m in rig.cluster.masters() if m is not source)
        slot = key_slot(rig.keys.chat_events(chat_id).encode())
        fleet = Fleet(random.Random(41), rig.ports)
        try:
            sockets = [
                await fleet.open(chat_id, kind, first_port=n % 2) for n, kind in enumerate(KINDS)
            ]
            await fleet.post(chat_id, fleet.ledger.content(300), with_client_id=True)
            await sockets[0].wait_for(lambda: sockets[0].chunks(), what="a first chunk")
            fleet.phase = "migrating"
            await asyncio.to_thread(rig.cluster.begin_migration, slot, target)
            moved = await asyncio.to_thread(rig.cluster.move_keys, slot, source, target, limit=2)
            posting = asyncio.create_task(
                fleet.post(chat_id, fleet.ledger.content(10), with_client_id=True)
            )
            # A post meets the slot half-moved (its first answer came), then the rest moves.
            await wait_until(lambda: fleet.ledger.posts[-1].attempts, 10, "a post mid-migration")
            moved += await asyncio.to_thread(rig.cluster.move_keys, slot, source, target)
            await asyncio.to_thread(rig.cluster.finish_migration, slot, source, target)
            during = await posting
            fleet.phase = "moved"
            await fleet.post(chat_id, fleet.ledger.content(10), with_client_id=True)
            snapshot = await wait_answered(rig, fleet.ledger.posts)
            await caught_up(fleet.sockets, snapshot)
        finally:
            await fleet.close()
        assert moved > 0
        assert during.accepted, during.attempts
        assert rig.node_of_chat(chat_id) is target
        _chats, jobs = await rig.snapshot([chat_id])
        findings = check_run(snapshot, fleet.sockets, fleet.ledger.posts, jobs, [], 0)
        rig.check_logs(findings)
        assert not findings.violations, violations(findings)

"""A master of the cluster dies while chats stream: its replica takes over, nothing is lost.

3 masters with a replica each; two gateways and two workers. Chats on every master stream
long replies to WebSocket and SSE readers (v1 and v2) when the master holding some of them
is SIGKILLed; more messages are posted (retried with their ``clientMessageId``, as the
widget does) while the cluster fails over. Then the guarantee checker's promises hold:
every accepted message is stored once and answered exactly once, every reader saw its
chat's log with no gap and no duplicate, no job is left pending or dead-lettered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest

from tests.cluster.rig import ClusterRig, caught_up, cluster_rig, violations, wait_answered
from tests.guarantees.checker import check_run
from tests.guarantees.fleet import KINDS, Fleet
from tests.support.redis_cluster import RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER_REPLICAS = 1


@pytest.fixture(scope="module")
def rig(
    redis_cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterRig]:
    """Agent, 2 gateways and 2 workers on the module's cluster (3 masters, 3 replicas)."""
    with cluster_rig(tmp_path_factory.mktemp("failover"), redis_cluster) as rig:
        yield rig


async def test_a_master_dies_mid_stream_and_no_accepted_message_is_lost(rig: ClusterRig) -> None:
    with rig.logs_on_failure():
        chats = rig.chats_on_every_master(2, "failover")
        seed = rig.cluster.live_nodes()[0]  # REDIS_URL of every process: kill another one
        victim = next(m for m in rig.cluster.masters() if m is not seed)
        on_victim = [c for c in chats if rig.node_of_chat(c) is victim]
        assert on_victim
        fleet = Fleet(random.Random(29), rig.ports)
        try:
            for i, chat_id in enumerate(chats):
                for j, kind in enumerate(KINDS):
                    await fleet.open(chat_id, kind, first_port=(i + j) % 2)
            fleet.phase = "before"
            await asyncio.gather(
                *(fleet.post(c, fleet.ledger.content(300), with_client_id=True) for c in chats)
            )
            # Every chat on the victim is streaming its reply when the master dies.
            await asyncio.gather(
                *(
                    s.wait_for(lambda s=s: s.chunks(), what="a first chunk")
                    for s in fleet.sockets
                    if s.chat_id in on_victim and s.kind == "ws-v2"
                )
            )
            fleet.phase = "failover"
            killed_ms = time.time() * 1000
            rig.cluster.kill(victim)
            during = [fleet.post(c, fleet.ledger.content(20), with_client_id=True) for c in chats]
            heir, *_posts = await asyncio.gather(
                asyncio.to_thread(rig.cluster.wait_failover, victim), *during
            )
            assert all(rig.node_of_chat(c) is heir for c in on_victim)
            fleet.phase = "after"
            await asyncio.gather(
                *(fleet.post(c, fleet.ledger.content(10), with_client_id=True) for c in chats)
            )
            snapshot = await wait_answered(rig, fleet.ledger.posts, within=90)
            await caught_up(fleet.sockets, snapshot)
        finally:
            await fleet.close()
        assert all(post.accepted for post in fleet.ledger.posts)
        _chats, jobs = await rig.snapshot(chats)
        findings = check_run(snapshot, fleet.sockets, fleet.ledger.posts, jobs, [], 0)
        assert not findings.violations, violations(findings)
        assert findings.messages_checked == 3 * len(chats)
        for chat_id in on_victim:  # the first replies there were finished by the heir
            first = next(p for p in fleet.ledger.posts if p.chat_id == chat_id)
            reply = next(
                m for m in snapshot[chat_id].messages if m.get("replyTo") == first.message_id
            )
            assert int(str(reply["eventId"]).split("-")[0]) > killed_ms

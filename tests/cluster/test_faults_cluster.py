"""The fault suite's main scenarios (tests/faults/scenarios.py) on a 3-master Redis Cluster.

The same scenarios as on one redis-server, run through ``tests.faults.harness.ON_CLUSTER``:
gateways and workers with ``REDIS_CLUSTER=true``, the checks reading the partitioned layout.
A worker SIGKILLed mid-answer is taken over; gateways stopped (SIGTERM) and crashed (SIGKILL)
while replies stream, their clients resume on the other one; a worker SIGTERMed finishes or
hands its job back; a job that kills every worker is dead-lettered in its partition.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.faults.harness import ON_CLUSTER
from tests.faults.scenarios import dead_worker, gateway_restart, poison_job, worker_sigterm
from tests.support.redis_cluster import RedisCluster

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@contextmanager
def on(cluster: RedisCluster) -> Iterator[None]:
    """Run the fault scenarios started in the body on ``cluster``."""
    token = ON_CLUSTER.set(cluster)
    try:
        yield
    finally:
        ON_CLUSTER.reset(token)


@pytest.mark.timeout(90)
async def test_dead_workers_reply_is_taken_over_and_shown_once(
    redis_cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with on(redis_cluster):
        r = await dead_worker(tmp_path_factory.mktemp("dead-worker"))
    assert r.reclaim_seconds < 10
    assert r.replies == 1
    assert r.agent_requests == 2
    assert r.pending_after == 0
    assert r.resets_v2 == 1
    assert r.v2_text_matches
    assert r.v1_cleared
    assert r.v1_text_matches
    for check in (r.v2, r.v1, r.sse):
        assert check.exact, check


@pytest.mark.timeout(90)
async def test_gateway_sigterm_and_crash_clients_resume_on_another_gateway(
    redis_cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with on(redis_cluster):
        r = await gateway_restart(tmp_path_factory.mktemp("gateway-restart"))
    assert r.term_close == {"ws-v2": 1012, "ws-v1": 1012, "sse-v2": "EOF"}
    assert r.term_exit_code == 0
    for name, check in r.streams.items():
        assert check.exact, (name, check)
        assert check.resyncs == 0, name
    assert r.replies == 2
    assert r.duplicate_replies == 0


@pytest.mark.timeout(90)
async def test_worker_sigterm_finishes_or_hands_its_job_to_another(
    redis_cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with on(redis_cluster):
        r = await worker_sigterm(tmp_path_factory.mktemp("worker-sigterm"))
    assert r.finish_exit_code == 0
    assert r.finished_complete
    assert r.finished_resets == 0
    assert r.release_exit_code == 0
    assert r.released_logged
    assert r.handover_seconds < 10  # handed back, not reclaimed after the 60 s idle threshold
    assert r.replies == 1
    assert r.resets == 1
    assert r.text_matches


@pytest.mark.timeout(120)
async def test_job_that_kills_every_worker_is_dead_lettered_in_its_partition(
    redis_cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with on(redis_cluster):
        r = await poison_job(tmp_path_factory.mktemp("poison"))
    assert r.kills == 3
    assert r.agent_requests == 3
    assert r.agent_requests_later == 3
    assert r.dead_letters == 1
    assert r.deliveries_at_dead_letter == "4"
    assert r.replies == 1
    assert r.reply_status == "error"
    assert r.pending_after == 0
    assert r.next_message_answered

"""Redis outages: a 10 s outage with AOF loses nothing; a Redis that lost its data is said so."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import hung_redis, lost_log, redis_outage

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.timeout(120)
async def test_ten_second_redis_outage_with_aof_loses_nothing(tmp_path: Path) -> None:
    r = await redis_outage(tmp_path, down_seconds=10.0)
    print(
        f"\nRedis back -> ready {r.ready_after_seconds}s, live frames {r.live_after_seconds}s, "
        f"first POST {r.first_post_after_seconds}s, interrupted reply {r.answered_after_seconds}s; "
        f"{r.posts_ok} POSTs ok, {r.posts_refused} refused (slowest {r.slowest_refusal_seconds}s)"
    )
    assert r.posts_ok > 10
    assert r.posts_ok_lost == 0
    assert r.posts_refused > 0
    assert r.refused_statuses == [503]
    assert r.refused_retry_after
    assert r.posts_other == []  # never a 500, never a hang
    assert r.slowest_refusal_seconds < 8
    assert r.readyz_during == {503}
    assert r.ready_after_seconds < 10  # backoff capped at 5 s
    assert r.live_after_seconds < 10
    assert r.unanswered == 0
    assert r.duplicate_replies == 0
    assert r.interrupted_resets >= 1  # the reply cut by the outage started again, reset first
    for name, check in r.streams.items():
        assert check.exact, (name, check)
        assert check.resyncs == 0, name
    assert r.gateway_alive
    assert r.worker_alive


@pytest.mark.timeout(60)
async def test_redis_that_lost_its_data_makes_live_v2_clients_resync(tmp_path: Path) -> None:
    r = await lost_log(tmp_path)
    print(f"\nresync after {r.resync_after_seconds}")
    assert set(r.resync_after_seconds) == {"ws-v2", "sse-v2"}
    assert max(r.resync_after_seconds.values()) < 10
    assert r.v1_resyncs == 0  # v1 clients never see the v2 frame
    for name, check in r.after_restart.items():
        assert check.exact, (name, check)  # then every event of the new log, in order
    assert r.resumed_old_point_resync


@pytest.mark.timeout(60)
async def test_hung_redis_gives_a_bounded_503_and_a_retry_stores_once(tmp_path: Path) -> None:
    r = await hung_redis(tmp_path)
    print(f"\nPOST {r.post_status} after {r.post_seconds}s, handshake {r.handshake_status}")
    assert r.post_status == 503
    assert r.post_retry_after
    assert r.post_seconds < 8  # REQUEST_TIMEOUT_SECONDS is 5; without it, about a minute
    assert r.handshake_status == 503
    assert r.handshake_seconds < 8
    assert r.readyz_during == 503
    # The first POST may have been stored when Redis woke up: the retry returns it.
    assert r.retry_status == 200
    assert r.stored_copies == 1
    assert r.replies == 1

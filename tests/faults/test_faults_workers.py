"""Workers under fault: SIGKILL mid-answer, a live slow job, a poison job, SIGTERM."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import dead_worker, poison_job, slow_job, worker_sigterm

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.timeout(90)
async def test_dead_workers_reply_is_taken_over_and_shown_once(tmp_path: Path) -> None:
    r = await dead_worker(tmp_path)
    print(f"\nreclaim {r.reclaim_seconds}s, answered {r.answer_seconds}s after the SIGKILL")
    assert r.reclaim_seconds < 10  # idle threshold 1.5 s in tests (30 s by default)
    assert r.replies == 1
    assert r.agent_requests == 2  # the dead attempt and the one that finished
    assert r.pending_after == 0
    # v2: one streamReset, and what follows it is exactly the final reply
    assert r.resets_v2 == 1
    assert r.v2_text_matches
    # v1: an empty done chunk clears the half-streamed bubble before the new attempt
    assert r.v1_cleared
    assert r.v1_text_matches
    for check in (r.v2, r.v1, r.sse):
        assert check.exact, check


@pytest.mark.timeout(120)
async def test_at_default_timings_a_dead_worker_is_taken_over_by_its_lapsed_liveness(
    tmp_path: Path,
) -> None:
    """Idle reclaim could not fire before 30 s, nor the dead worker's lease lapse: the new
    attempt comes from the departed worker's liveness lapsing (about 6-8 s)."""
    r = await dead_worker(tmp_path, default_timings=True)
    print(f"\ndefault timings: new attempt {r.reclaim_seconds}s after the SIGKILL")
    assert r.reclaim_seconds < 30  # before the 30 s idle threshold and 30 s lease
    assert r.replies == 1
    assert r.pending_after == 0
    for check in (r.v2, r.v1, r.sse):
        assert check.exact, check


@pytest.mark.timeout(90)
async def test_live_slow_job_is_never_taken_over(tmp_path: Path) -> None:
    r = await slow_job(tmp_path)
    print(f"\ngeneration {r.generation_seconds}s with a {r.min_idle_seconds}s idle threshold")
    assert r.generation_seconds > 4 * r.min_idle_seconds
    assert r.max_deliveries_seen == 1
    assert r.reclaims_logged == 0
    assert r.agent_requests == 1
    assert r.resets == 0
    assert r.replies == 1
    assert r.complete


@pytest.mark.timeout(120)
async def test_job_that_kills_every_worker_is_dead_lettered_after_three_deliveries(
    tmp_path: Path,
) -> None:
    r = await poison_job(tmp_path)
    print(f"\npoison job dead-lettered after {r.kills} crashes, {r.seconds}s")
    assert r.kills == 3
    assert r.agent_requests == 3
    assert r.agent_requests_later == 3  # nothing loops
    assert r.dead_letters == 1
    assert r.deliveries_at_dead_letter == "4"
    assert r.reason == "delivered 4 times"
    assert r.replies == 1
    assert r.reply_status == "error"
    assert "try again" in r.reply_content
    assert r.pending_after == 0
    assert r.next_message_answered


@pytest.mark.timeout(90)
async def test_worker_sigterm_finishes_or_hands_its_job_to_another(tmp_path: Path) -> None:
    r = await worker_sigterm(tmp_path)
    print(f"\nhandover {r.handover_seconds}s after SIGTERM (idle threshold {r.min_idle_seconds}s)")
    # a long grace: the reply in progress completes, the process exits 0
    assert r.finish_exit_code == 0
    assert r.finished_complete
    assert r.finished_resets == 0
    # a short grace: the job is handed back and taken at the next sweep, not after 60 s
    assert r.release_exit_code == 0
    assert r.released_logged
    assert r.handover_seconds < 10
    assert r.replies == 1
    assert r.resets == 1
    assert r.text_matches

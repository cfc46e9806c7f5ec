"""The agent under fault: it goes away in the middle of an answer and comes back (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import agent_lost

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.timeout(90)
async def test_an_agent_lost_mid_answer_is_waited_for_and_the_whole_answer_follows(
    tmp_path: Path,
) -> None:
    r = await agent_lost(tmp_path)
    print(f"\nrestarted answer shown {r.resume_seconds}s after the agent came back")
    assert r.waited  # "Terra is reconnecting to her model", not the apology
    assert r.status is None
    assert r.replies == 1
    assert r.agent_requests_after == 1  # one new attempt once the agent was back
    assert r.pending_after == 0
    # v2: one streamReset, and what follows it is exactly the final reply
    assert r.resets_v2 == 1
    assert r.v2_text_matches
    # v1: an empty done chunk clears the half-streamed bubble before the new attempt
    assert r.v1_cleared
    assert r.v1_text_matches
    for check in (r.v2, r.v1, r.sse):
        assert check.exact, check

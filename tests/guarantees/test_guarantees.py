"""The guarantee checker's short mode, in the test command (issue 9).

Real redis-server, demo agent, 2 gateways and 2 workers; about 200 sockets (WS v1/v2, SSE
v1/v2) on new and old chats, random drops and resumes, posts with and without
``clientMessageId``, and one fault of each kind. ``python -m tests.guarantees --long``
runs the long mode.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guarantees.plan import SHORT
from tests.guarantees.report import render
from tests.guarantees.scenario import run_plan
from tests.support.redis_server import redis_server_binary

pytestmark = [
    pytest.mark.faults,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
]


@pytest.mark.timeout(480)
async def test_short_soak_keeps_every_promise(tmp_path: Path) -> None:
    outcome = await run_plan(SHORT, tmp_path)
    report = render(outcome)
    print(report)
    # The run did what it claims (a checker that checked nothing would pass).
    assert len(outcome.sockets) >= 200
    assert outcome.findings.frames_checked > 1000
    assert sum(outcome.activity.faults.values()) == SHORT.rounds
    assert not outcome.findings.violations, report

"""Unit-tier fixtures: the demo agent in-process (no delay) and a client for it; long
checks started in the background when the tier starts (``background_checks``)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from demo.agent import DemoAgentConfig, run_demo_agent
from tests.support.background import BackgroundRun
from worker.llm import AgentClient

ROOT = Path(__file__).resolve().parents[2]
#: The checks a test may collect with ``@pytest.mark.background_check(name)``: commands
#: run from the repository root.
BACKGROUND_COMMANDS = {"mypy": [sys.executable, "-m", "mypy"]}


@pytest.fixture(scope="package", autouse=True)
def background_checks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, BackgroundRun]]:
    """The background checks the selected tests ask for, started before the tier's first test.

    mypy over the tree takes about half a minute of one core, while the other unit tests
    keep one core busy: run side by side, the tier takes the longer of the two, not the sum.
    The tests that collect them run last in the tier (``tests/conftest.py``).
    """
    wanted = {
        str(marker.args[0])
        for item in request.session.items
        for marker in item.iter_markers("background_check")
    }
    runs = {
        name: BackgroundRun(
            BACKGROUND_COMMANDS[name], cwd=ROOT, workdir=tmp_path_factory.mktemp(name)
        )
        for name in sorted(wanted)
    }
    try:
        yield runs
    finally:
        for run in runs.values():
            run.stop()


@pytest.fixture
async def agent_url() -> AsyncIterator[str]:
    """Base URL of a demo agent that streams without delay."""
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0)) as url:
        yield url


@pytest.fixture
async def client(agent_url: str) -> AsyncIterator[AgentClient]:
    """An AgentClient for that agent with quick retries."""
    llm = AgentClient(
        base_url=f"{agent_url}/v1", model="m", timeout_seconds=5, retry_base_seconds=0.01
    )
    try:
        yield llm
    finally:
        await llm.aclose()

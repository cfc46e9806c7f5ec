"""Unit-tier fixtures: the demo agent in-process (no delay) and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from demo.agent import DemoAgentConfig, run_demo_agent
from worker.llm import AgentClient


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

"""The worker's view of agent and model health against real-server quirks (issue 16).

A real demo agent over loopback HTTP, stopped and restarted on the same port for outages;
the monitor's rounds are driven one by one (``check``), so nothing waits on a clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from demo.agent import DemoAgentConfig, run_demo_agent
from demo.launcher import free_port
from tests.support.agent import all_agent_requests
from tests.support.wait import wait_until
from worker.errors import AgentError
from worker.health import NO_TOOLS_NOTE, HealthMonitor, context_length, derive_models_url
from worker.llm import AgentClient

pytestmark = pytest.mark.integration


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        yield http


def monitor_for(url: str, **kw: float) -> tuple[HealthMonitor, AgentClient]:
    client = AgentClient(base_url=f"{url}/v1", model="terra-demo-offline", timeout_seconds=5)
    monitor = HealthMonitor(
        client,
        f"{url}/health",
        interval_seconds=kw.get("interval", 5.0),
        llm_interval_seconds=kw.get("llm_interval", 180.0),
        timeout_seconds=2.0,
    )
    return monitor, client


def test_models_url_and_context_length_from_a_models_body() -> None:
    assert derive_models_url("http://h:1/health") == "http://h:1/v1/models"
    body = {"data": [{"id": "a", "max_model_len": 8192}, {"id": "b", "max_model_len": 4096}]}
    assert context_length(body, "a") == 8192
    assert context_length(body, "other") == 4096
    assert context_length({"data": [{"id": "a"}]}, "a") is None
    assert context_length({"data": "nonsense"}, "a") is None
    assert context_length([1, 2], None) is None


async def test_a_404_on_health_means_no_health_route_not_online(
    session: aiohttp.ClientSession,
) -> None:
    config = DemoAgentConfig(token_delay_ms=0, quirks=frozenset({"no_health"}))
    async with run_demo_agent(config) as url:
        monitor, client = monitor_for(url)
        try:
            await monitor.check(session)
            assert monitor.health_route is False
            assert monitor.agent.status == "online"
            assert monitor.agent.detail == "no health route; /v1/models answers"
            assert monitor.llm.status == "online"
            await monitor.check(session)
            assert monitor.health_route is False  # not asked again until an outage
        finally:
            await client.aclose()


async def test_the_context_length_comes_from_v1_models(session: aiohttp.ClientSession) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0, context_tokens=2048)) as url:
        monitor, client = monitor_for(url)
        try:
            await monitor.check(session)
            assert monitor.health_route is True
            assert monitor.context_tokens == 2048
        finally:
            await client.aclose()
    hidden = DemoAgentConfig(
        token_delay_ms=0, context_tokens=2048, quirks=frozenset({"hide_context_length"})
    )
    async with run_demo_agent(hidden) as url:
        monitor, client = monitor_for(url)
        try:
            await monitor.check(session)
            assert monitor.context_tokens is None
        finally:
            await client.aclose()


@pytest.mark.parametrize("quirks", [frozenset(), frozenset({"no_health"})])
async def test_outage_shows_in_one_round_and_recovery_in_the_next(
    session: aiohttp.ClientSession, quirks: frozenset[str]
) -> None:
    port = free_port()
    config = DemoAgentConfig(token_delay_ms=0, quirks=quirks)  # type: ignore[arg-type]
    async with run_demo_agent(config, port=port) as url:
        monitor, client = monitor_for(url, llm_interval=180.0)
        await monitor.check(session)
        assert (monitor.agent.status, monitor.llm.status) == ("online", "online")
    try:
        await monitor.check(session)  # the server is gone; the inference probe is not due
        assert monitor.agent.status == "offline"
        assert monitor.llm.status == "offline"
        assert "agent unreachable" in str(monitor.llm.detail)
        async with run_demo_agent(config, port=port):
            await monitor.check(session)
            assert (monitor.agent.status, monitor.llm.status) == ("online", "online")
    finally:
        await client.aclose()


async def test_the_probe_loop_notices_an_outage_with_no_traffic() -> None:
    port = free_port()
    stop = asyncio.Event()
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0), port=port) as url:
        monitor, client = monitor_for(url, interval=0.05, llm_interval=180.0)
        loop = asyncio.create_task(monitor.run(stop))
        await wait_until(lambda: monitor.llm.status == "online", 10, "the model online")
    try:
        await wait_until(lambda: monitor.llm.status == "offline", 10, "the model offline")
    finally:
        stop.set()
        await loop
        await client.aclose()


async def test_a_failed_answer_is_not_overridden_by_a_probe_every_round(
    session: aiohttp.ClientSession,
) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0)) as url:
        monitor, client = monitor_for(url)
        try:
            await monitor.check(session)
            monitor.record_failure(AgentError("server_error", "HTTP 500", retryable=True))
            await monitor.check(session)
            assert monitor.llm.status == "offline"
            probes = [r for r in await all_agent_requests(url) if r.get("max_tokens") == 4]
            assert len(probes) == 1  # the first round's only
            monitor.record_reply(12.0)
            assert monitor.llm.latencyMs == 12.0  # an answer shows recovery at once
        finally:
            await client.aclose()


async def test_the_llm_detail_says_when_tools_are_off(session: aiohttp.ClientSession) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0)) as url:
        monitor, client = monitor_for(url)
        try:
            await monitor.check(session)
            assert monitor.llm.detail is None
            monitor.record_tool_support(False)
            assert monitor.llm.detail == NO_TOOLS_NOTE
            assert monitor.llm.status == "online"
            monitor.record_failure(AgentError("network", "boom", retryable=True))
            assert monitor.llm.detail == f"network: boom; {NO_TOOLS_NOTE}"
            monitor.record_tool_support(True)
            assert monitor.llm.detail == "network: boom"
        finally:
            await client.aclose()

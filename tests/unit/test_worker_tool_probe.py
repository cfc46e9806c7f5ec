"""The start-up probe of tool support (issue 16), against the demo agent over loopback."""

from __future__ import annotations

import aiohttp

from demo.agent import DemoAgentConfig, run_demo_agent
from demo.agent_script import Quirk
from worker.llm import AgentClient


def client(url: str) -> tuple[AgentClient, list[bool]]:
    llm = AgentClient(base_url=f"{url}/v1", model="m", timeout_seconds=5)
    told: list[bool] = []
    llm.on_tool_support = told.append
    return llm, told


async def test_an_empty_stream_for_tools_turns_tools_off_then_a_good_answer_back_on() -> None:
    quirks: frozenset[Quirk] = frozenset({"empty_tool_stream"})
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0, quirks=quirks)) as url:
        llm, told = client(url)
        try:
            assert await llm.probe_tools() is False
            assert llm.tools_streamed is False
            assert await llm.probe_tools() is False
            assert told == [False]  # told (and logged) once
            async with aiohttp.ClientSession() as http:  # the server is fixed and restarted
                await http.post(f"{url}/_demo/quirks", json={"quirks": []})
            assert await llm.probe_tools() is True
            assert llm.tools_streamed is None  # offered again; answers tell more
            assert told == [False, True]
        finally:
            await llm.aclose()


async def test_a_server_error_or_no_server_tells_nothing() -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0)) as url:
        llm, told = client(url)
        try:
            async with aiohttp.ClientSession() as http:
                await http.post(f"{url}/_demo/fail", json={"count": 1, "mode": "http500"})
            assert await llm.probe_tools() is None
            assert await llm.probe_tools() is True
        finally:
            await llm.aclose()
    llm, told = client(url)  # the agent is gone
    try:
        assert await llm.probe_tools() is None
    finally:
        await llm.aclose()
    assert told == []
    assert llm.tools_streamed is None


async def test_a_400_for_tools_turns_tools_off() -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0)) as url:
        llm, told = client(url)
        try:
            async with aiohttp.ClientSession() as http:
                await http.post(f"{url}/_demo/fail", json={"count": 1, "mode": "http400"})
            assert await llm.probe_tools() is False
            assert told == [False]
        finally:
            await llm.aclose()

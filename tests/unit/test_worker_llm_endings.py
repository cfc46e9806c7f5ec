"""How the agent client reads the end of a stream, against the demo agent's real-server
quirks on loopback (issue 16): cut streams, empty 200 streams, tools the server cannot stream.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.support.agent import all_agent_requests
from worker.errors import AgentError
from worker.llm import AgentClient, EmptyReply

SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "search_site",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


class ListSink:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def push(self, text: str) -> bool:
        self.parts.append(text)
        return True

    @property
    def emitted(self) -> bool:
        return bool(self.parts)


def user(text: str) -> list[Any]:
    return [{"role": "system", "content": "S"}, {"role": "user", "content": text}]


async def set_quirks(agent_url: str, *quirks: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{agent_url}/_demo/quirks", json={"quirks": list(quirks)}) as resp,
    ):
        assert resp.status == 200


async def test_a_stream_cut_after_text_is_a_failure_not_an_answer(
    client: AgentClient, agent_url: str
) -> None:
    sink = ListSink()
    with pytest.raises(AgentError) as caught:
        await client.complete(user("hi [[demo:tokens=10]] [[demo:no_done]]"), sink)
    assert caught.value.category == "network"
    assert caught.value.retryable
    assert "".join(sink.parts)  # half the answer was shown, so it is not tried again
    assert len(await all_agent_requests(agent_url)) == 1


async def test_a_finish_reason_length_is_kept_on_the_turn(client: AgentClient) -> None:
    client.max_tokens = 3
    turn = await client.complete(user("hi [[demo:tokens=10]]"), ListSink())
    assert turn.finish_reason == "length"
    assert turn.deltas == 3


async def test_an_empty_200_stream_is_a_request_error_that_spares_the_breaker(
    client: AgentClient, agent_url: str
) -> None:
    question = user("hi [[demo:context=3]] [[demo:quirk=empty_errors]]")
    for _ in range(client.breaker.threshold + 1):
        with pytest.raises(EmptyReply) as caught:
            await client.complete(question, ListSink())
        assert caught.value.category == "http_error"
        assert not caught.value.retryable
    assert not client.breaker.is_open
    assert len(await all_agent_requests(agent_url)) == client.breaker.threshold + 1


async def test_tools_are_dropped_once_the_server_proves_it_cannot_stream_them(
    client: AgentClient, agent_url: str
) -> None:
    await set_quirks(agent_url, "empty_tool_stream")
    learnt: list[bool] = []
    client.on_tool_support = learnt.append
    for question in ("what are your projects?", "and the site?"):
        turn = await client.complete(user(question), ListSink(), tools=[SEARCH_TOOL])
        assert turn.content
    requests = await all_agent_requests(agent_url)
    assert [("tools" in r) for r in requests] == [True, False, False]
    assert learnt == [False]
    assert client.tools_streamed is False


async def test_a_server_that_streams_tool_calls_is_said_to(client: AgentClient) -> None:
    learnt: list[bool] = []
    client.on_tool_support = learnt.append
    turn = await client.complete(user("your projects?"), ListSink(), tools=[SEARCH_TOOL])
    assert [call.name for call in turn.tool_calls] == ["search_site"]
    assert learnt == [True]


async def test_the_probe_sends_no_system_turn_without_a_system_role(agent_url: str) -> None:
    await set_quirks(agent_url, "no_system_role")
    with_role = AgentClient(base_url=f"{agent_url}/v1", model="m", timeout_seconds=5)
    without = AgentClient(
        base_url=f"{agent_url}/v1", model="m", timeout_seconds=5, system_role=False
    )
    try:
        assert (await with_role.probe()).status == "offline"
        assert (await without.probe()).status == "online"
    finally:
        await with_role.aclose()
        await without.aclose()

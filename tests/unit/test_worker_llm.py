"""The agent client against the demo agent on loopback: streaming, retries, breaker, probe."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx2
import openai
import pytest

from tests.support.agent import all_agent_requests
from tests.support.redis_server import free_port
from worker.agent_failures import CircuitBreaker, classify_error
from worker.errors import AgentError
from worker.llm import AgentClient
from worker.toolloop import reply


class ListSink:
    """Collects deltas; asks to stop after ``stop_after`` of them."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.parts: list[str] = []
        self.stop_after = stop_after

    def push(self, text: str) -> bool:
        self.parts.append(text)
        return self.stop_after is None or len(self.parts) < self.stop_after

    @property
    def emitted(self) -> bool:
        return bool(self.parts)


async def fail_next(agent_url: str, count: int, mode: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{agent_url}/_demo/fail", json={"count": count, "mode": mode}),
    ):
        pass


def user(text: str) -> list[Any]:
    return [{"role": "system", "content": "S"}, {"role": "user", "content": text}]


async def test_streams_deltas_into_the_sink(client: AgentClient, agent_url: str) -> None:
    sink = ListSink()
    turn = await reply(client, user("hi [[demo:tokens=12]]"), sink)
    assert turn.deltas == 12
    assert "".join(sink.parts) == turn.content
    assert turn.finish_reason == "stop"
    assert not turn.stopped
    (request,) = await all_agent_requests(agent_url)
    assert request["stream"] is True
    assert request["temperature"] == 0.7
    assert request["model"] == "m"


async def test_sink_can_stop_the_stream(client: AgentClient) -> None:
    sink = ListSink(stop_after=3)
    turn = await reply(client, user("hi [[demo:tokens=50]]"), sink)
    assert turn.stopped
    assert turn.deltas == 3
    assert turn.content == "".join(sink.parts)


async def test_reasoning_is_collected_apart(client: AgentClient) -> None:
    turn = await reply(client, user("[[demo:reasoning]] [[demo:echo]] hello"), ListSink())
    assert turn.content == "hello"
    assert turn.reasoning


async def test_tool_call_deltas_are_merged_by_index(client: AgentClient) -> None:
    turn = await client.stream_once(
        user('[[demo:tool=search_site {"query": "dice"}]] [[demo:tool=what_matthew_wants]]'),
        ListSink(),
    )
    assert turn.finish_reason == "tool_calls"
    assert [c.name for c in turn.tool_calls] == ["search_site", "what_matthew_wants"]
    assert turn.tool_calls[0].arguments.replace(" ", "") == '{"query":"dice"}'
    assert all(c.id for c in turn.tool_calls)
    assert turn.as_message()["tool_calls"][0]["function"]["name"] == "search_site"
    # no tools are offered yet: a tool-only turn is a failure, not an empty reply
    with pytest.raises(AgentError, match="asked for tools"):
        await reply(client, user("[[demo:tool=search_site]]"), ListSink())


async def test_failures_before_any_text_are_retried(client: AgentClient, agent_url: str) -> None:
    await fail_next(agent_url, 2, "http502")
    turn = await reply(client, user("[[demo:echo]] back"), ListSink())
    assert turn.content == "back"
    assert len(await all_agent_requests(agent_url)) == 3
    assert not client.breaker.is_open


async def test_failure_after_text_is_not_retried(client: AgentClient, agent_url: str) -> None:
    sink = ListSink()
    with pytest.raises(AgentError) as info:
        await reply(client, user("hi [[demo:error]]"), sink)
    assert info.value.category == "server_error"
    assert sink.parts  # text was shown
    assert len(await all_agent_requests(agent_url)) == 1


async def test_disconnect_after_text_is_a_network_error(client: AgentClient) -> None:
    with pytest.raises(AgentError) as info:
        await reply(client, user("hi [[demo:disconnect]]"), ListSink())
    assert info.value.category == "network"


@pytest.mark.parametrize(
    ("status", "category", "attempts"),
    [(500, "server_error", 3), (429, "http_error", 3), (400, "http_error", 1), (401, "auth", 1)],
)
async def test_http_errors(
    client: AgentClient, agent_url: str, status: int, category: str, attempts: int
) -> None:
    with pytest.raises(AgentError) as info:
        await reply(client, user(f"x [[demo:http={status}]]"), ListSink())
    assert info.value.category == category
    assert info.value.status == status
    assert len(await all_agent_requests(agent_url)) == attempts


async def test_one_failing_request_never_opens_the_circuit_for_others(
    client: AgentClient, agent_url: str
) -> None:
    """Issue 9: one message the agent fails on (tried 3 times) counts once, so the next
    visitor's message is still tried."""
    with pytest.raises(AgentError):
        await reply(client, user("x [[demo:http=503]]"), ListSink())
    assert len(await all_agent_requests(agent_url)) == 3  # retried
    assert not client.breaker.is_open
    turn = await reply(client, user("[[demo:echo]] ok"), ListSink())
    assert turn.content


async def test_three_failed_requests_in_a_row_open_the_circuit(client: AgentClient) -> None:
    for i in range(3):
        with pytest.raises(AgentError):
            await reply(client, user(f"x{i} [[demo:http=503]]"), ListSink())
    assert client.breaker.is_open
    with pytest.raises(AgentError) as info:
        await reply(client, user("[[demo:echo]] ok"), ListSink())
    assert info.value.category == "circuit_open"


async def test_unreachable_agent_is_a_network_error() -> None:
    llm = AgentClient(
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        model="m",
        max_attempts=2,
        retry_base_seconds=0.01,
    )
    try:
        with pytest.raises(AgentError) as info:
            await reply(llm, user("hi"), ListSink())
        status = await llm.probe(timeout_seconds=2)
    finally:
        await llm.aclose()
    assert info.value.category == "network"
    assert info.value.retryable
    assert status.status == "offline"
    assert str(status.detail).startswith("network")


async def test_inference_probe(client: AgentClient, agent_url: str) -> None:
    status = await client.probe()
    assert status.status == "online"
    assert status.latencyMs is not None
    (request,) = await all_agent_requests(agent_url)
    assert request["max_tokens"] == 4
    assert request["temperature"] == 0
    assert not request.get("stream")


def test_circuit_breaker_opens_and_recovers() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, open_seconds=10, clock=lambda: now[0])
    for _ in range(2):
        breaker.record_failure()
    breaker.check()  # still closed
    breaker.record_failure()
    with pytest.raises(AgentError, match="circuit_open"):
        breaker.check()
    now[0] = 10.5
    breaker.check()  # a trial call is let through
    breaker.record_failure()  # which failed: open again at once
    assert breaker.is_open
    now[0] = 21.0
    breaker.record_success()
    assert not breaker.is_open
    breaker.record_failure()
    assert not breaker.is_open


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://agent/v1/chat/completions")
    response = httpx2.Response(status, request=request, headers=headers or {})
    return openai.APIStatusError(f"HTTP {status}", response=response, body=None)


def test_classify_error() -> None:
    request = httpx2.Request("POST", "http://agent/v1/chat/completions")
    assert classify_error(openai.APITimeoutError(request=request)).category == "timeout"
    assert classify_error(openai.APIConnectionError(request=request)).category == "network"
    assert classify_error(_status_error(503)).retryable
    assert classify_error(_status_error(403)).category == "auth"
    limited = classify_error(_status_error(429, {"retry-after": "2"}))
    assert limited.retryable
    assert limited.retry_after == 2.0
    assert not classify_error(_status_error(404)).retryable
    in_stream = classify_error(openai.APIError("boom", request, body={"message": "boom"}))
    assert in_stream.category == "server_error"
    assert in_stream.detail == "server_error: boom"
    assert classify_error(ValueError("x")).category == "unknown"

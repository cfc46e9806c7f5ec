"""Issue 10: the streaming call skips the openai package's per-request transform and
per-chunk models (aiohttp + orjson, worker.agent_stream); the probe still uses openai."""

from __future__ import annotations

from typing import Any

import pytest
from openai.resources.chat.completions import AsyncCompletions

from tests.support.agent import all_agent_requests
from worker.agent_stream import AgentStreamer
from worker.errors import AgentError
from worker.llm import AgentClient
from worker.toolloop import reply


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


async def test_streaming_does_not_go_through_openais_create(
    client: AgentClient, agent_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    original = AsyncCompletions.create

    async def counted(self: AsyncCompletions, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return await original(self, **kwargs)

    monkeypatch.setattr(AsyncCompletions, "create", counted)
    sink = ListSink()
    turn = await reply(client, user("hi [[demo:tokens=20]]"), sink)
    assert turn.deltas == 20
    assert "".join(sink.parts) == turn.content
    assert [c for c in calls if c.get("stream")] == []
    (request,) = await all_agent_requests(agent_url)
    assert request["stream"] is True
    assert request["model"] == "m"
    status = await client.probe()  # the health probe is still the openai client's call
    assert status.status == "online"
    assert len(calls) == 1


async def test_an_error_body_keeps_its_message(client: AgentClient) -> None:
    """A 4xx's message reaches the AgentError, as the openai client reported it."""
    with pytest.raises(AgentError, match="demo: injected HTTP 404") as caught:
        await reply(client, user("x [[demo:http=404]]"), ListSink())
    assert caught.value.status == 404
    assert not caught.value.retryable


def test_the_proxy_settings_are_read_once_not_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    proxied = AgentStreamer("http://agent.example/v1", None, 5)
    assert str(proxied.proxy) == "http://proxy.example:3128"
    direct = AgentStreamer("http://127.0.0.1:8000/v1", None, 5)
    assert direct.proxy is None

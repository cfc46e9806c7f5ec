"""The demo agent's real-server quirks (issue 16), over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from demo.agent import DemoAgentConfig, run_demo_agent
from demo.agent_script import (
    QUIRKS,
    CompletionRequest,
    DirectiveError,
    parse_directives,
    prompt_tokens,
    request_rejection,
)

SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "search_site",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}
ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."


@pytest.fixture
async def agent_url() -> AsyncIterator[str]:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0)) as url:
        yield url


def user(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def system(content: str) -> dict[str, Any]:
    return {"role": "system", "content": content}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, str, str]:
    """POST a completion; status, content type and the raw body."""
    async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
        return resp.status, resp.content_type, await resp.text()


def data_lines(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def request(messages: list[dict[str, Any]], **extra: Any) -> CompletionRequest:
    return CompletionRequest.model_validate_json(json.dumps({"messages": messages, **extra}))


# --- pure checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        [user("a"), user("b")],
        [system("s"), user("a"), assistant("b"), assistant("c")],
        [assistant("a"), user("b")],
        [system("s"), user("a"), system("warning"), user("b")],
        [user("a"), {"role": "tool", "content": "r", "tool_call_id": "x"}],
    ],
)
def test_strict_roles_refuse_what_gemma_refuses(messages: list[dict[str, Any]]) -> None:
    rejection = request_rejection(
        request(messages), quirks=frozenset({"strict_roles"}), context_tokens=None
    )
    assert rejection == ALTERNATE


def test_strict_roles_accept_alternating_turns_after_one_system_message() -> None:
    messages = [system("s"), user("a"), assistant("b"), user("c")]
    assert (
        request_rejection(
            request(messages), quirks=frozenset({"strict_roles"}), context_tokens=None
        )
        is None
    )
    assert request_rejection(request(messages), quirks=frozenset(), context_tokens=None) is None


def test_no_system_role_refuses_any_system_message() -> None:
    rejection = request_rejection(
        request([system("s"), user("a")]), quirks=frozenset({"no_system_role"}), context_tokens=None
    )
    assert rejection == "System role not supported"


def test_context_limit_counts_prompt_and_max_tokens_as_vllm_words_it() -> None:
    body = request([user("x" * 400)], max_tokens=20)  # 100 + 4 prompt tokens
    assert prompt_tokens(body) == 104
    assert request_rejection(body, quirks=frozenset(), context_tokens=124) is None
    rejection = request_rejection(body, quirks=frozenset(), context_tokens=123)
    assert rejection is not None
    assert rejection.startswith("This model's maximum context length is 123 tokens.")
    assert "you requested 124 tokens (104 in the messages, 20 in the completion)" in rejection


def test_quirk_and_context_directives_are_checked() -> None:
    found = parse_directives("hi [[demo:quirk=strict_roles]] [[demo:context=50]] [[demo:no_done]]")
    assert found.quirks == frozenset({"strict_roles"})
    assert found.context_tokens == 50
    assert found.no_done
    with pytest.raises(DirectiveError, match="quirks are"):
        parse_directives("[[demo:quirk=sloppy]]")


def test_config_refuses_unknown_quirks() -> None:
    with pytest.raises(ValueError, match="unknown quirks"):
        DemoAgentConfig(quirks=frozenset({"sloppy"}))  # type: ignore[arg-type]
    assert set(QUIRKS) >= {"strict_roles", "no_done", "no_health", "empty_tool_stream"}


# --- over HTTP -------------------------------------------------------------------------------


async def test_strict_roles_400_through_the_openai_client() -> None:
    config = DemoAgentConfig(token_delay_ms=0, quirks=frozenset({"strict_roles"}))
    async with (
        run_demo_agent(config) as url,
        AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as llm,
    ):
        twice: list[Any] = [user("one"), user("two")]
        with pytest.raises(openai.BadRequestError) as caught:
            await llm.chat.completions.create(model="m", messages=twice, stream=True)
        assert caught.value.status_code == 400
        assert ALTERNATE in str(caught.value)
        alternating: list[Any] = [user("one"), assistant("1"), user("two")]
        ok = await llm.chat.completions.create(model="m", messages=alternating)
        assert ok.choices[0].message.content


async def test_quirk_directive_applies_to_that_request_only(
    http: aiohttp.ClientSession, agent_url: str
) -> None:
    strict = [user("one"), user("two [[demo:quirk=strict_roles]]")]
    assert (await post(http, agent_url, {"messages": strict}))[0] == 400
    lenient = [user("one"), user("two")]
    assert (await post(http, agent_url, {"messages": lenient}))[0] == 200


async def test_empty_errors_turn_a_400_into_an_empty_200_stream(
    http: aiohttp.ClientSession,
) -> None:
    config = DemoAgentConfig(token_delay_ms=0, quirks=frozenset({"strict_roles", "empty_errors"}))
    async with run_demo_agent(config) as url:
        body = {"messages": [user("one"), user("two")]}
        status, content_type, text = await post(http, url, body | {"stream": True})
        assert (status, content_type, text) == (200, "text/event-stream", "")
        # Without streaming the same request is still refused in words.
        assert (await post(http, url, body))[0] == 400


async def test_context_limit_is_enforced_and_reported_in_models(
    http: aiohttp.ClientSession,
) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0, context_tokens=64)) as url:
        async with http.get(f"{url}/v1/models") as resp:
            assert (await resp.json())["data"][0]["max_model_len"] == 64
        status, _, text = await post(
            http, url, {"messages": [user("y" * 200)], "max_tokens": 20, "stream": True}
        )
        assert status == 400
        assert "maximum context length is 64 tokens" in json.loads(text)["error"]["message"]
        assert (await post(http, url, {"messages": [user("short")], "max_tokens": 20}))[0] == 200


async def test_hide_context_length_leaves_max_model_len_out(http: aiohttp.ClientSession) -> None:
    config = DemoAgentConfig(
        token_delay_ms=0, context_tokens=64, quirks=frozenset({"hide_context_length"})
    )
    async with run_demo_agent(config) as url, http.get(f"{url}/v1/models") as resp:
        assert "max_model_len" not in (await resp.json())["data"][0]


async def test_no_done_ends_the_stream_halfway_without_finish_reason(
    http: aiohttp.ClientSession, agent_url: str
) -> None:
    body = {"messages": [user("hi [[demo:tokens=20]] [[demo:no_done]]")], "stream": True}
    status, _, text = await post(http, agent_url, body)
    assert status == 200
    payloads = data_lines(text)
    assert "[DONE]" not in payloads
    chunks = [json.loads(p) for p in payloads]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:]]
    assert len(pieces) == 10
    assert all(pieces)


async def test_length_finish_reason_at_max_tokens(
    http: aiohttp.ClientSession, agent_url: str
) -> None:
    body = {"messages": [user("[[demo:tokens=30]]")], "max_tokens": 7, "stream": True}
    _, _, text = await post(http, agent_url, body)
    payloads = data_lines(text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) == 7


async def test_empty_tool_stream_for_tool_requests_only(http: aiohttp.ClientSession) -> None:
    config = DemoAgentConfig(token_delay_ms=0, quirks=frozenset({"empty_tool_stream"}))
    async with run_demo_agent(config) as url:
        with_tools = {
            "messages": [user("what are your projects?")],
            "stream": True,
            "tools": [SEARCH_TOOL],
            "tool_choice": "auto",
        }
        assert await post(http, url, with_tools) == (200, "text/event-stream", "")
        _, _, text = await post(http, url, with_tools | {"tool_choice": "none"})
        assert data_lines(text)[-1] == "[DONE]"
        _, _, text = await post(http, url, {"messages": [user("hi")], "stream": True})
        assert data_lines(text)[-1] == "[DONE]"


async def test_no_health_is_a_404_and_quirks_switch_at_runtime(
    http: aiohttp.ClientSession, agent_url: str
) -> None:
    async with http.get(f"{agent_url}/health") as resp:
        assert resp.status == 200
    async with http.post(f"{agent_url}/_demo/quirks", json={"quirks": ["no_health"]}) as resp:
        assert await resp.json() == {"quirks": ["no_health"], "context_tokens": None}
    async with http.get(f"{agent_url}/health") as resp:
        assert resp.status == 404
    async with http.get(f"{agent_url}/v1/models") as resp:
        assert resp.status == 200
    async with http.post(f"{agent_url}/_demo/reset") as resp:
        assert resp.status == 200
    async with http.get(f"{agent_url}/health") as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    "body",
    [{"quirks": ["sloppy"]}, {"quirks": "no_done"}, {"quirks": [], "context_tokens": 0}],
)
async def test_quirks_route_refuses_bad_input(
    http: aiohttp.ClientSession, agent_url: str, body: dict[str, Any]
) -> None:
    async with http.post(f"{agent_url}/_demo/quirks", json=body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["message"]


async def test_no_system_role_per_start(http: aiohttp.ClientSession) -> None:
    config = DemoAgentConfig(token_delay_ms=0, quirks=frozenset({"no_system_role"}))
    async with run_demo_agent(config) as url:
        status, _, text = await post(http, url, {"messages": [system("s"), user("hi")]})
        assert status == 400
        assert json.loads(text)["error"]["message"] == "System role not supported"
        assert (await post(http, url, {"messages": [user("s\n\nhi")]}))[0] == 200


async def test_an_injected_no_done_ends_only_the_next_stream_early(
    http: aiohttp.ClientSession, agent_url: str
) -> None:
    async with http.post(f"{agent_url}/_demo/fail", json={"mode": "no_done"}) as resp:
        assert resp.status == 200
    body = {"messages": [user("hi [[demo:tokens=8]]")], "stream": True}
    cut = data_lines((await post(http, agent_url, body))[2])
    assert "[DONE]" not in cut
    assert len(cut) == 1 + 4  # the role delta, then half the pieces
    whole = data_lines((await post(http, agent_url, body))[2])
    assert whole[-1] == "[DONE]"


async def test_tool_results_sent_as_text_are_read_as_results(
    http: aiohttp.ClientSession, agent_url: str
) -> None:
    result = '<tool_result tool="search_site">\n{"snippet": "Dice roller"}\n</tool_result>'
    body = {
        "messages": [
            user("what are your projects?"),
            assistant('[called search_site with {"query": "projects"}]'),
            user(result),
        ],
        "tools": [SEARCH_TOOL],
        "stream": True,
    }
    _, _, text = await post(http, agent_url, body)
    chunks = [json.loads(p) for p in data_lines(text)[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "Dice roller" in content  # an answer from the result, not another call
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

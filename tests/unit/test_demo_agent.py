"""The offline demo agent, over real loopback HTTP: raw SSE checks and the `openai` client."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from demo.agent import DemoAgentConfig, main, run_demo_agent
from demo.agent_script import (
    DirectiveError,
    fragment_arguments,
    parse_directives,
    split_tokens,
)

SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "search_site",
        "description": "Search the cached site.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
}
PAGE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "fetch_site_page",
        "parameters": {"type": "object", "properties": {"slug_or_url": {"type": "string"}}},
    },
}


@pytest.fixture
async def agent_url() -> AsyncIterator[str]:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0)) as url:
        yield url


@pytest.fixture
async def client(agent_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{agent_url}/v1", api_key="x", max_retries=0, timeout=5
    ) as llm:
        yield llm


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def user(content: str) -> ChatCompletionMessageParam:
    return {"role": "user", "content": content}


async def raw_sse(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, str, list[str]]:
    """POST a streaming completion; return status, content type and every `data:` payload."""
    async with http.post(f"{url}/v1/chat/completions", json=body | {"stream": True}) as resp:
        text = await resp.text()
        payloads = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
        return resp.status, resp.content_type, payloads


async def stream_text(llm: AsyncOpenAI, messages: list[Any], **kw: Any) -> str:
    stream: AsyncStream[ChatCompletionChunk] = await llm.chat.completions.create(
        model="any", messages=messages, stream=True, **kw
    )
    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


async def stream_calls(
    llm: AsyncOpenAI, messages: list[Any], **kw: Any
) -> tuple[list[dict[str, Any]], str | None]:
    """Merge streamed tool-call deltas by `index`, as a correct client must."""
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    stream: AsyncStream[ChatCompletionChunk] = await llm.chat.completions.create(
        model="any", messages=messages, stream=True, **kw
    )
    async for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] += delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
    return [calls[i] for i in sorted(calls)], finish


# --- pure helpers -------------------------------------------------------------------------


def test_split_tokens_gives_word_pieces_that_join_back() -> None:
    text = "  Hello there, terrariumenthusiast!\nBye "
    pieces = split_tokens(text)
    assert "".join(pieces) == text
    assert len(pieces) > 4
    assert all(len(piece.strip()) <= 8 for piece in pieces)


def test_fragment_arguments_always_splits_json_into_several_pieces() -> None:
    for arguments in ("{}", '{"query": "projects"}', '{"a": 1}'):
        fragments = fragment_arguments(arguments)
        assert len(fragments) >= 2
        assert "".join(fragments) == arguments


def test_parse_directives_strips_them_and_reads_values() -> None:
    found = parse_directives(
        'Hi [[demo:tokens=7]] there [[demo:tool=search_site {"query": "a]b"}]] '
        "[[demo:tool2=fetch_site_page]] [[demo:stall]] [[demo:echo]]"
    )
    assert found.text == "Hi  there"
    assert found.tokens == 7
    assert found.stall_seconds == 5.0
    assert found.echo
    assert [(c.name, c.arguments) for c in found.tools] == [("search_site", {"query": "a]b"})]
    assert [(c.name, c.arguments) for c in found.tools2] == [("fetch_site_page", None)]


@pytest.mark.parametrize(
    "text",
    [
        "[[demo:nope]]",
        "[[demo:tokens=lots]]",
        "[[demo:http=200]]",
        "[[demo:tool=x {not json}]]",
        "[[demo:tool=x [1]]]",
        "[[demo:echo=1]]",
    ],
)
def test_parse_directives_rejects_mistakes(text: str) -> None:
    with pytest.raises(DirectiveError):
        parse_directives(text)


# --- plain replies ------------------------------------------------------------------------


async def test_streamed_reply_is_honest_and_names_the_question(
    http: aiohttp.ClientSession, agent_url: str
) -> None:
    status, content_type, payloads = await raw_sse(
        http, agent_url, {"messages": [user("What is Terra?")]}
    )
    assert status == 200
    assert content_type == "text/event-stream"
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["model"] == "terra-demo-offline" and c["created"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "offline demo agent" in text
    assert "“What is Terra?”" in text
    assert len(chunks) > 10


async def test_openai_client_streams_content(client: AsyncOpenAI) -> None:
    text = await stream_text(client, [user("Do you like moss?")])
    assert "offline demo agent" in text
    assert "Do you like moss?" in text


async def test_non_stream_completion_and_models(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="ignored", messages=[user("hi [[demo:echo]]")]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "hi"
    assert completion.choices[0].finish_reason == "stop"
    models = await client.models.list()
    assert [m.id for m in models.data] == ["terra-demo-offline"]


async def test_echo_tokens_and_max_tokens(client: AsyncOpenAI) -> None:
    echoed = await stream_text(client, [user("  one, two [[demo:echo]] three  ")])
    assert echoed == "one, two  three"
    stream = await client.chat.completions.create(
        model="m", messages=[user("[[demo:tokens=120]]")], stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
    assert len(pieces) == 120
    capped = await client.chat.completions.create(
        model="m", messages=[user("[[demo:tokens=50]]")], max_tokens=5
    )
    assert capped.choices[0].finish_reason == "length"
    assert len(split_tokens(capped.choices[0].message.content or "")) <= 5


async def test_directives_only_count_in_the_last_user_message(client: AsyncOpenAI) -> None:
    messages = [
        user("[[demo:error]] [[demo:http=500]]"),
        {"role": "assistant", "content": "ok"},
        user("second question [[demo:echo]]"),
    ]
    assert await stream_text(client, messages) == "second question"


async def test_per_token_delay_directive(client: AsyncOpenAI) -> None:
    started = time.monotonic()
    await stream_text(client, [user("[[demo:tokens=6]] [[demo:delay=40]]")])
    assert time.monotonic() - started >= 0.2


async def test_reasoning_content_comes_before_content(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=[user("why? [[demo:reasoning]]")], stream=True
    )
    kinds: list[str] = []
    reasoning = ""
    async for chunk in stream:
        delta = chunk.choices[0].delta
        extra = (delta.model_extra or {}).get("reasoning_content")
        if extra:
            kinds.append("reasoning")
            reasoning += extra
        if delta.content:
            kinds.append("content")
    assert kinds.index("content") > kinds.index("reasoning")
    assert kinds.count("reasoning") > 2
    assert "content" not in kinds[: kinds.count("reasoning")]
    assert "why?" in reasoning


async def test_think_tags_are_written_into_content(client: AsyncOpenAI) -> None:
    text = await stream_text(client, [user("hmm [[demo:think]]")])
    assert text.startswith("<think>")
    assert "</think>" in text
    assert "offline demo agent" in text.split("</think>", 1)[1]


# --- tool calls ---------------------------------------------------------------------------


async def test_tool_call_deltas_follow_vllm_shape(
    http: aiohttp.ClientSession, agent_url: str
) -> None:
    body = {
        "messages": [
            user(
                '[[demo:tool=search_site {"query": "terrarium"}]] '
                '[[demo:tool=fetch_site_page {"slug_or_url": "about"}]]'
            )
        ],
        "tools": [SEARCH_TOOL, PAGE_TOOL],
    }
    status, _, payloads = await raw_sse(http, agent_url, body)
    assert status == 200
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    for index, name in enumerate(["search_site", "fetch_site_page"]):
        mine = [d for d in deltas if d["index"] == index]
        first, rest = mine[0], mine[1:]
        assert first["id"].startswith("chatcmpl-tool-")
        assert first["type"] == "function"
        assert first["function"]["name"] == name
        assert len(rest) >= 2
        assert all("id" not in d and "type" not in d and "name" not in d["function"] for d in rest)
        assert all(d["function"]["arguments"] for d in rest)
    assert deltas[0]["id"] != next(d for d in deltas if d["index"] == 1)["id"]


async def test_openai_merge_by_index_rebuilds_parallel_calls(client: AsyncOpenAI) -> None:
    calls, finish = await stream_calls(
        client,
        [user('[[demo:tool=search_site {"query": "bots"}]] [[demo:tool=list_github_repos {}]]')],
        tools=[SEARCH_TOOL],
    )
    assert finish == "tool_calls"
    assert [c["name"] for c in calls] == ["search_site", "list_github_repos"]
    assert [json.loads(c["arguments"]) for c in calls] == [{"query": "bots"}, {}]
    assert all(c["id"] for c in calls)


async def test_natural_search_then_answer_quotes_the_result(client: AsyncOpenAI) -> None:
    question = user("What projects has Matthew built?")
    calls, finish = await stream_calls(client, [question], tools=[SEARCH_TOOL])
    assert finish == "tool_calls"
    assert [c["name"] for c in calls] == ["search_site"]
    assert json.loads(calls[0]["arguments"]) == {"query": "What projects has Matthew built?"}
    result = {"query": "projects", "results": [{"file": "p.md", "snippet": "Terrarium, a bot"}]}
    messages = [
        question,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": "search_site", "arguments": calls[0]["arguments"]},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": calls[0]["id"],
            "content": f'<tool_result tool="search_site">\n{json.dumps(result)}\n</tool_result>',
        },
    ]
    answer = await stream_text(client, messages, tools=[SEARCH_TOOL])
    assert "search_site" in answer
    assert "“Terrarium, a bot”" in answer


async def test_no_natural_tool_call_without_the_tool_or_with_tool_choice_none(
    client: AsyncOpenAI,
) -> None:
    question = [user("Tell me about the site")]
    assert (await stream_calls(client, question))[0] == []
    assert (await stream_calls(client, question, tools=[SEARCH_TOOL], tool_choice="none"))[0] == []


async def test_two_scripted_tool_rounds_then_an_answer(client: AsyncOpenAI) -> None:
    messages: list[Any] = [
        user('hi [[demo:tool=search_site {"query": "a"}]] [[demo:tool2=fetch_site_page]]')
    ]
    seen: list[list[str]] = []
    for round_number in range(2):
        calls, finish = await stream_calls(client, messages, tools=[SEARCH_TOOL, PAGE_TOOL])
        assert finish == "tool_calls"
        seen.append([c["name"] for c in calls])
        messages.append({"role": "assistant", "content": "", "tool_calls": []})
        messages += [
            {
                "role": "tool",
                "tool_call_id": c["id"],
                "name": c["name"],
                "content": f"r{round_number}",
            }
            for c in calls
        ]
    assert seen == [["search_site"], ["fetch_site_page"]]
    answer, finish = await stream_calls(client, messages, tools=[SEARCH_TOOL, PAGE_TOOL])
    assert answer == []
    assert finish == "stop"
    assert "r0" in await stream_text(client, messages)


async def test_textual_and_bad_argument_tool_calls(client: AsyncOpenAI) -> None:
    text = await stream_text(
        client, [user("find x [[demo:textual_tool=search_site]]")], tools=[SEARCH_TOOL]
    )
    assert text == 'search_site(query="find x")'
    calls, _ = await stream_calls(client, [user("[[demo:badargs=search_site]]")])
    assert calls[0]["name"] == "search_site"
    with pytest.raises(json.JSONDecodeError):
        json.loads(calls[0]["arguments"])


async def test_non_stream_tool_calls(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="m", messages=[user('[[demo:tool=search_site {"query": "q"}]]')]
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "search_site",
        {"query": "q"},
    )


# --- failures -----------------------------------------------------------------------------


async def test_in_stream_error_object_without_done(
    http: aiohttp.ClientSession, agent_url: str, client: AsyncOpenAI
) -> None:
    status, _, payloads = await raw_sse(http, agent_url, {"messages": [user("[[demo:error]]")]})
    assert status == 200
    assert "[DONE]" not in payloads
    assert json.loads(payloads[-1]) == {
        "error": {
            "message": "demo: injected failure in the middle of the stream",
            "type": "server_error",
        }
    }
    assert any(json.loads(p).get("choices", [{}])[0]["delta"].get("content") for p in payloads[:-1])
    with pytest.raises(openai.APIError, match="injected failure"):
        await stream_text(client, [user("[[demo:error]]")])


async def test_http_status_directive(
    client: AsyncOpenAI, http: aiohttp.ClientSession, agent_url: str
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await stream_text(client, [user("[[demo:http=500]]")])
    assert caught.value.status_code == 500
    with pytest.raises(openai.RateLimitError):
        await stream_text(client, [user("[[demo:http=429]]")])
    body = {"messages": [user("[[demo:http=503]]")]}
    async with http.post(f"{agent_url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 503
        error = (await resp.json())["error"]
        assert error["type"] == "server_error"
        assert error["code"] == 503
        assert error["message"]


async def test_disconnect_directive(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await stream_text(client, [user("[[demo:disconnect]]")])
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=[user("[[demo:disconnect]]")])


async def test_stall_directive_trips_a_client_timeout() -> None:
    # The stall lasts 30 s: the client's timeout, and the agent's shutdown, must not wait for it.
    async with asyncio.timeout(15), run_demo_agent(DemoAgentConfig(token_delay_ms=0)) as url:
        llm = AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=0.3)
        async with llm:
            with pytest.raises(openai.APITimeoutError):
                await stream_text(llm, [user("[[demo:stall=30]]")])


async def test_failure_injection(
    http: aiohttp.ClientSession, agent_url: str, client: AsyncOpenAI
) -> None:
    async with http.post(f"{agent_url}/_demo/fail", json={"count": 2, "mode": "http500"}) as r:
        assert r.status == 200
        assert (await r.json()) == {"pending": 2}
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await stream_text(client, [user("hi")])
    assert "offline demo agent" in await stream_text(client, [user("hi")])

    await http.post(f"{agent_url}/_demo/fail", json={"mode": "error"})
    with pytest.raises(openai.APIError, match="injected"):
        await stream_text(client, [user("hi")])
    await http.post(f"{agent_url}/_demo/fail", json={"mode": "disconnect"})
    with pytest.raises(openai.APIConnectionError):
        await stream_text(client, [user("hi")])
    await http.post(f"{agent_url}/_demo/fail", json={"mode": "stall", "seconds": 0.3})
    started = time.monotonic()
    assert "offline demo agent" in await stream_text(client, [user("hi")])
    assert time.monotonic() - started >= 0.3

    async with http.post(f"{agent_url}/_demo/fail", json={"mode": "explode"}) as r:
        assert r.status == 400
    await http.post(f"{agent_url}/_demo/fail", json={"count": 3, "mode": "http502"})
    await http.post(f"{agent_url}/_demo/reset")
    assert "offline demo agent" in await stream_text(client, [user("hi")])


async def test_recorded_requests_and_reset(
    http: aiohttp.ClientSession, agent_url: str, client: AsyncOpenAI
) -> None:
    await stream_text(client, [{"role": "system", "content": "be kind"}, user("first")])
    await client.chat.completions.create(model="m", messages=[user("second")], temperature=0.7)
    async with http.get(f"{agent_url}/_demo/requests") as r:
        recorded = (await r.json())["requests"]
    assert [body["messages"][-1]["content"] for body in recorded] == ["first", "second"]
    assert recorded[0]["messages"][0] == {"role": "system", "content": "be kind"}
    assert recorded[0]["stream"] is True
    assert recorded[1]["temperature"] == 0.7
    await http.post(f"{agent_url}/_demo/reset")
    async with http.get(f"{agent_url}/_demo/requests") as r:
        assert (await r.json()) == {"requests": []}


async def test_health_states(http: aiohttp.ClientSession, agent_url: str) -> None:
    async with http.get(f"{agent_url}/health") as r:
        assert r.status == 200
        assert await r.json() == {
            "status": "healthy",
            "vllm_status": "ready",
            "model": "terra-demo-offline",
            "queue_length": 0,
        }
    await http.post(f"{agent_url}/_demo/health", json={"status": "degraded"})
    async with http.get(f"{agent_url}/health") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "degraded"
    await http.post(f"{agent_url}/_demo/health", json={"status": "down"})
    async with http.get(f"{agent_url}/health") as r:
        assert r.status == 503
        assert (await r.json())["status"] == "down"
    body = {"messages": [user("hi")], "stream": True}
    async with http.post(f"{agent_url}/v1/chat/completions", json=body) as r:
        assert r.status == 503
    async with http.post(f"{agent_url}/_demo/health", json={"status": "sleepy"}) as r:
        assert r.status == 400
    await http.post(f"{agent_url}/_demo/reset")
    async with http.get(f"{agent_url}/health") as r:
        assert r.status == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": []}, "messages"),
        ({}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": None}]}, "null content"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"messages": [user("x")], "stream": "yes"}, "stream"),
        ({"messages": [user("x")], "max_tokens": 0}, "max_tokens"),
        ({"messages": [user("[[demo:tokens=-1]]")]}, "tokens"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_requests_get_clear_400s(
    http: aiohttp.ClientSession, agent_url: str, body: Any, needle: str
) -> None:
    async with http.post(f"{agent_url}/v1/chat/completions", json=body) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["code"] == 400
    assert error["type"] == "http_error"
    assert needle in error["message"]


async def test_not_json_and_unknown_route(http: aiohttp.ClientSession, agent_url: str) -> None:
    async with http.post(f"{agent_url}/v1/chat/completions", data=b"{nope") as r:
        assert r.status == 400
        assert "not valid JSON" in (await r.json())["error"]["message"]
    async with http.get(f"{agent_url}/v1/nothing") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == 404


async def test_usage_chunk_when_asked(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=[user("hi")], stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


# --- the CLI ------------------------------------------------------------------------------


def test_main_rejects_a_negative_delay() -> None:
    with pytest.raises(SystemExit):
        main(["--token-delay-ms", "-1"])


async def test_cli_serves_health(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "demo.agent",
        "--port",
        str(port),
        "--token-delay-ms",
        "0",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as r:
                        assert (await r.json())["status"] == "healthy"
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
    finally:
        process.terminate()
        await process.wait()

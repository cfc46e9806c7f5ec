"""The server's tokenizer for the context budget (issue 16): found by a probe, cached, and
the estimate kept when there is none; over real loopback HTTP (the demo agent, and a tiny
server shaped like llama.cpp's own, which has only ``/tokenize`` answering ``{"tokens"}``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from demo.agent import DemoAgentConfig, run_demo_agent
from demo.agent_script import text_tokens
from demo.launcher import free_port
from worker.conversation import PromptRules
from worker.tokenizer import ServerTokenizer, server_root


class LlamaCppServer:
    """``POST /tokenize {"content"}`` -> ``{"tokens": [...]}`` (one token per word)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def tokenize(self, request: web.Request) -> web.Response:
        self.asked.append(request.path)
        text = (await request.json())["content"]
        return web.json_response({"tokens": list(range(len(text.split())))})


@pytest.fixture
async def llama_cpp() -> AsyncIterator[tuple[str, LlamaCppServer]]:
    server = LlamaCppServer()
    app = web.Application()
    app.router.add_post("/tokenize", server.tokenize)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        await runner.cleanup()


def test_server_root() -> None:
    assert server_root("http://h:8000/v1") == "http://h:8000"
    assert server_root("http://h:8000/v1/") == "http://h:8000"
    assert server_root("http://h/proxy") == "http://h/proxy"


async def test_the_demo_agents_counts_are_used_and_cached() -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=0)) as url:
        tokenizer = ServerTokenizer(f"{url}/v1", "m")
        texts = ["hello there", "word " * 100, "hello there"]
        counts = await tokenizer.counts(texts)
        assert counts == {t: text_tokens(t) for t in texts}
        assert tokenizer.route == "/extras/tokenize/count"  # llama-cpp-python's, tried first
    # the agent is gone: cached counts need no request
    assert await tokenizer.counts(["word " * 100]) == {"word " * 100: 125}
    assert await tokenizer.counts(["new text"]) is None  # unreachable: the estimate is kept
    assert tokenizer.available


async def test_llama_cpp_servers_tokenize_route_is_found(
    llama_cpp: tuple[str, LlamaCppServer],
) -> None:
    url, server = llama_cpp
    tokenizer = ServerTokenizer(f"{url}/v1", "m")
    assert await tokenizer.counts(["one two three", "four"]) == {"one two three": 3, "four": 1}
    assert tokenizer.route == "/tokenize"
    assert await tokenizer.counts(["four", "five six"]) == {"four": 1, "five six": 2}
    assert server.asked == ["/tokenize"] * 3  # each text once


async def test_a_server_without_a_tokenizer_is_probed_once() -> None:
    config = DemoAgentConfig(token_delay_ms=0, quirks=frozenset({"no_tokenizer"}))
    async with run_demo_agent(config) as url:
        tokenizer = ServerTokenizer(f"{url}/v1", "m")
        assert await tokenizer.counts(["hello"]) is None
        assert tokenizer.route is False
        assert not tokenizer.available


def test_the_budget_counts_with_the_servers_counts() -> None:
    text = "word " * 300  # 1500 bytes: 500 by the estimate, 375 by the demo's tokenizer
    rules = PromptRules(context_tokens=1000)
    assert rules.may_trim([text, text])
    exact = rules.with_counts({text: 375})
    assert exact.count(text) == 375
    assert exact.count("abc") == 1  # not counted by the server: the estimate

"""search_web against a local SearxNG stand-in (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tools import ToolContext, ToolSettings, create_default_registry
from tools.base import JsonObject
from tools.registry import ToolRegistry

RESULTS = {
    "query": "ignored",
    "results": [
        {"title": "Dice  roller", "url": "https://dice.example/", "content": "Roll\n dice " * 100},
        {"title": "No URL", "content": "skipped"},
        {"title": "FTP", "url": "ftp://files.example/x", "content": "skipped"},
        {"name": "Named", "link": "https://named.example/", "summary": "from items-style keys"},
        "not an object",
        {"title": "Three", "url": "https://3.example/", "snippet": "s3"},
        {"title": "Four", "url": "https://4.example/", "content": "c4"},
        {"title": "Five", "url": "https://5.example/", "content": "c5"},
        {"title": "Six", "url": "https://6.example/", "content": "c6"},
    ],
}


class SearxStub:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], str | None]] = []
        self.mode = "ok"

    def app(self) -> web.Application:
        async def search(request: web.Request) -> web.StreamResponse:
            self.requests.append((dict(request.query), request.headers.get("Authorization")))
            if self.mode == "error":
                return web.Response(status=502, text="bad gateway")
            if self.mode == "slow":
                await asyncio.sleep(3)
            if self.mode == "html":
                return web.Response(text="<html>captcha</html>", content_type="text/html")
            if self.mode == "items":
                return web.json_response({"items": [{"title": "I", "link": "https://i.example/"}]})
            return web.json_response(RESULTS)

        app = web.Application()
        app.router.add_get("/search", search)
        return app


@pytest.fixture
async def searx() -> AsyncIterator[tuple[SearxStub, str]]:
    stub = SearxStub()
    server = TestServer(stub.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield stub, str(server.make_url("/search"))
    finally:
        await server.close()


@pytest.fixture
async def ctx() -> AsyncIterator[ToolContext]:
    async with aiohttp.ClientSession() as http:
        yield ToolContext(chat_id="c", http=http)


def make_registry(tmp_path: Path, url: str | None, **extra: Any) -> ToolRegistry:
    return create_default_registry(
        ToolSettings(_env_file=None, search_api_url=url, enhancement_dir=tmp_path, **extra)
    )


async def search(registry: ToolRegistry, ctx: ToolContext, **args: Any) -> JsonObject:
    return (await registry.execute("search_web", args, ctx)).payload


async def test_results_are_mapped_and_clamped(
    searx: tuple[SearxStub, str], ctx: ToolContext, tmp_path: Path
) -> None:
    stub, url = searx
    registry = make_registry(tmp_path, url, search_api_key="k3y")
    payload = await search(registry, ctx, query="dice roller", max_results=50)
    assert payload["query"] == "dice roller"
    assert payload["source"] == "searxng"
    results = payload["results"]
    assert [r["url"] for r in results] == [
        "https://dice.example/",
        "https://named.example/",
        "https://3.example/",
        "https://4.example/",
        "https://5.example/",
    ]
    assert results[0]["title"] == "Dice roller"
    assert len(results[0]["snippet"]) == 500
    assert "\n" not in results[0]["snippet"]
    assert results[1] == {
        "title": "Named",
        "url": "https://named.example/",
        "snippet": "from items-style keys",
    }
    query, auth = stub.requests[0]
    assert query == {
        "q": "dice roller",
        "format": "json",
        "language": "en",
        "safesearch": "1",
        "max_results": "5",
    }
    assert auth == "Bearer k3y"


async def test_defaults_and_lower_clamp(
    searx: tuple[SearxStub, str], ctx: ToolContext, tmp_path: Path
) -> None:
    stub, url = searx
    registry = make_registry(tmp_path, url, search_max_results=2)
    assert len((await search(registry, ctx, query="x"))["results"]) == 2
    assert stub.requests[-1][1] is None  # no key, no Authorization header
    assert len((await search(registry, ctx, query="x", max_results=0))["results"]) == 1


async def test_items_lists_are_read_too(
    searx: tuple[SearxStub, str], ctx: ToolContext, tmp_path: Path
) -> None:
    stub, url = searx
    stub.mode = "items"
    payload = await search(make_registry(tmp_path, url), ctx, query="x")
    assert payload["results"] == [{"title": "I", "url": "https://i.example/", "snippet": ""}]


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("error", "Web search failed: HTTP 502"),
        ("html", "Web search failed: the answer was not JSON"),
    ],
)
async def test_upstream_failures_become_errors(
    searx: tuple[SearxStub, str], ctx: ToolContext, tmp_path: Path, mode: str, error: str
) -> None:
    stub, url = searx
    stub.mode = mode
    result = await make_registry(tmp_path, url).execute("search_web", {"query": "x"}, ctx)
    assert result.payload == {"error": error}
    assert result.error_kind == "unavailable"


async def test_timeout(searx: tuple[SearxStub, str], ctx: ToolContext, tmp_path: Path) -> None:
    stub, url = searx
    stub.mode = "slow"
    registry = make_registry(tmp_path, url, search_timeout_seconds=0.3)
    result = await registry.execute("search_web", {"query": "x"}, ctx)
    assert result.payload == {"error": "Web search timed out after 0.3 s"}
    assert result.error_kind == "timeout"


async def test_not_configured_or_unreachable(ctx: ToolContext, tmp_path: Path) -> None:
    payload = await search(make_registry(tmp_path, None), ctx, query="x")
    assert payload == {"error": "Web search is not configured"}
    payload = await search(make_registry(tmp_path, "http://127.0.0.1:9/search"), ctx, query="x")
    assert payload == {"error": "Web search failed: the search service is unreachable"}
    payload = await search(make_registry(tmp_path, None), ctx, query="")
    assert payload == {"error": "query is required"}

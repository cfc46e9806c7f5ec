"""search_chat_logs over the current chat's history (AND, OR and phrase modes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from tools import ChatLogEntry, ToolContext, ToolRegistry, ToolSettings, create_default_registry
from tools.base import JsonObject

NOW = datetime.now(UTC)
HISTORY = [
    ChatLogEntry(NOW - timedelta(hours=30), "Visitor", "Do you like dice games?"),
    ChatLogEntry(NOW - timedelta(hours=5), "Terra", "Matthew built a dice notation roller."),
    ChatLogEntry(NOW - timedelta(hours=4), "Visitor", "What about card games like Oh Heck?"),
    ChatLogEntry(NOW - timedelta(hours=1), "Terra", "The Oh Heck scorekeeper works offline."),
    ChatLogEntry(NOW - timedelta(minutes=5), "Visitor", "Tell me more about the ROLLER"),
]


@pytest.fixture
def registry(tmp_path: Path) -> ToolRegistry:
    return create_default_registry(ToolSettings(_env_file=None, enhancement_dir=tmp_path))


@pytest.fixture
async def ctx() -> AsyncIterator[ToolContext]:
    calls: list[str] = []

    async def read_history() -> Sequence[ChatLogEntry]:
        calls.append("read")
        return HISTORY

    async with aiohttp.ClientSession() as http:
        yield ToolContext(chat_id="c", http=http, read_history=read_history)


async def search(registry: ToolRegistry, ctx: ToolContext, **args: object) -> JsonObject:
    return (await registry.execute("search_chat_logs", args, ctx)).payload


async def test_and_mode_needs_every_word(registry: ToolRegistry, ctx: ToolContext) -> None:
    payload = await search(registry, ctx, query="dice roller")
    assert payload["count"] == 1
    assert payload["messages"] == [
        {
            "timestamp": (NOW - timedelta(hours=5))
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
            "sender": "Terra",
            "message": "Matthew built a dice notation roller.",
        }
    ]
    assert payload["query"] == "dice roller"
    assert payload["result"] == "Found 1 matching message(s)"
    assert set(payload) == {"result", "count", "messages", "query"}


async def test_or_mode_and_newest_first(registry: ToolRegistry, ctx: ToolContext) -> None:
    payload = await search(registry, ctx, query="dice+heck")
    assert [m["message"][:12] for m in payload["messages"]] == [
        "The Oh Heck ",
        "What about c",
        "Matthew buil",
        "Do you like ",
    ]


async def test_phrase_mode_is_exact_but_case_insensitive(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    payload = await search(registry, ctx, query='"oh heck scorekeeper"')
    assert payload["count"] == 1
    payload = await search(registry, ctx, query='"heck oh"')
    assert payload["count"] == 0
    assert payload["result"] == "No messages found matching '\"heck oh\"'"


async def test_filters(registry: ToolRegistry, ctx: ToolContext) -> None:
    payload = await search(registry, ctx, query="roller", sender="visitor")
    assert [m["sender"] for m in payload["messages"]] == ["Visitor"]
    assert payload["filters"] == {"sender": "visitor"}
    payload = await search(registry, ctx, query="dice", hours=24)
    assert payload["count"] == 1
    assert payload["filters"] == {"hours": 24}


async def test_results_are_capped_at_ten(registry: ToolRegistry, tmp_path: Path) -> None:
    many = [ChatLogEntry(NOW, "Visitor", f"hello {i} " + "x" * 900) for i in range(25)]

    async def read_history() -> Sequence[ChatLogEntry]:
        return many

    async with aiohttp.ClientSession() as http:
        context = ToolContext(chat_id="c", http=http, read_history=read_history)
        payload = await search(registry, context, query="hello")
    assert payload["count"] == 10
    assert payload["messages"][0]["message"].startswith("hello 24")
    assert all(len(m["message"]) <= 500 for m in payload["messages"])


async def test_without_a_history_reader(registry: ToolRegistry) -> None:
    async with aiohttp.ClientSession() as http:
        payload = await search(registry, ToolContext(chat_id="c", http=http), query="dice")
    assert payload["count"] == 0
    assert payload["messages"] == []

"""write_enhancement_request: slugged files, no absolute paths, count and size caps.

The count caps are per chat and per UTC day, and in the folder in all (issue 11: one visitor
used to exhaust a global cap of 10 for everyone)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from tools import ToolContext, ToolRegistry, ToolSettings, create_default_registry
from tools.write_enhancement_request import create_write_enhancement_request_tool, slugify


def _files(folder: Path, pattern: str) -> list[Path]:
    return list(folder.glob(pattern))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "ideas" / "nested"


@pytest.fixture
def registry(folder: Path) -> ToolRegistry:
    settings = ToolSettings(
        _env_file=None,
        enhancement_dir=folder,
        enhancement_max_files=10,
        enhancement_max_per_chat=100,
        enhancement_max_bytes=600,
    )
    return create_default_registry(settings)


@pytest.fixture
async def ctx() -> AsyncIterator[ToolContext]:
    async with aiohttp.ClientSession() as http:
        yield ToolContext(chat_id="chat-42", http=http)


async def test_writes_a_slugged_file_and_returns_only_its_name(
    registry: ToolRegistry, ctx: ToolContext, folder: Path
) -> None:
    result = await registry.execute(
        "write_enhancement_request",
        {"summary": "Add a DARK mode / theme!! ", "details": "Night owls\nwould love it."},
        ctx,
    )
    payload = result.payload
    assert payload["ok"] is True
    assert payload["summary"] == "Add a DARK mode / theme!!"
    assert re.fullmatch(r"\d{8}T\d{6}Z-add-a-dark-mode-theme\.txt", payload["file"])
    assert str(folder) not in result.content
    assert "/" not in payload["file"]
    text = (folder / payload["file"]).read_text()
    assert text.startswith("Summary: Add a DARK mode / theme!!\nTimestamp: ")
    assert " UTC\nChat: chat-42\n\nNight owls\nwould love it." in text


async def test_same_second_same_summary_does_not_overwrite(
    registry: ToolRegistry, ctx: ToolContext, folder: Path
) -> None:
    names = set()
    for _ in range(3):
        payload = (
            await registry.execute("write_enhancement_request", {"summary": "x"}, ctx)
        ).payload
        names.add(payload["file"])
    assert len(names) == 3 == len(_files(folder, "*"))


async def test_count_cap_holds_under_concurrency(
    registry: ToolRegistry, ctx: ToolContext, folder: Path
) -> None:
    results = await asyncio.gather(
        *(
            registry.execute("write_enhancement_request", {"summary": f"idea {i}"}, ctx)
            for i in range(15)
        )
    )
    assert sum(r.ok for r in results) == 10
    refused = [r for r in results if not r.ok]
    assert len(refused) == 5
    assert refused[0].error_kind == "limit_reached"
    assert refused[0].payload["error"].startswith("Enhancement request limit reached (10 files)")
    assert len(_files(folder, "*.txt")) == 10


async def test_size_cap_truncates_details(
    registry: ToolRegistry, ctx: ToolContext, folder: Path
) -> None:
    payload = (
        await registry.execute(
            "write_enhancement_request", {"summary": "long", "details": "é" * 5000}, ctx
        )
    ).payload
    assert payload["truncated"] is True
    data = (folder / payload["file"]).read_bytes()
    assert len(data) <= 600
    assert data.decode().endswith("[truncated]\n")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({}, "summary is required"),
        ({"summary": "   "}, "summary is required"),
        ({"summary": "x" * 201}, "summary: String should have at most 200 characters"),
    ],
)
async def test_invalid_requests(
    registry: ToolRegistry, ctx: ToolContext, arguments: dict[str, str], error: str
) -> None:
    assert (await registry.execute("write_enhancement_request", arguments, ctx)).payload == {
        "error": error
    }


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_the_cap_is_per_chat_and_per_day(folder: Path) -> None:
    settings = ToolSettings(_env_file=None, enhancement_dir=folder, enhancement_max_per_chat=3)
    clock = Clock()
    registry = ToolRegistry(default_timeout=5)
    registry.register(create_write_enhancement_request_tool(settings, clock=clock))
    async with aiohttp.ClientSession() as http:
        one, two = ToolContext(chat_id="one", http=http), ToolContext(chat_id="two", http=http)

        async def write(ctx: ToolContext, i: int) -> bool:
            arguments = {"summary": f"idea {i}"}
            return (await registry.execute("write_enhancement_request", arguments, ctx)).ok

        # one chat echoing a prompt injection seven times leaves three files...
        assert [await write(one, i) for i in range(7)] == [True] * 3 + [False] * 4
        refused = await registry.execute("write_enhancement_request", {"summary": "x"}, one)
        assert refused.error_kind == "limit_reached"
        assert "3 enhancement requests today" in refused.payload["error"]
        # ...and another visitor's chat can still leave its idea
        assert await write(two, 0)
        clock.now += timedelta(hours=2)  # the next UTC day
        assert await write(one, 8)
    assert len(_files(folder, "*.txt")) == 5


def test_slugify() -> None:
    assert slugify("Hello, World!") == "hello-world"
    assert slugify("../../etc/passwd") == "etc-passwd"
    assert slugify("日本語") == "request"
    assert len(slugify("word " * 40)) <= 50

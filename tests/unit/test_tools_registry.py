"""The registry: schemas for the model, and execute() never raising for model mistakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import Field

import tools
from tools import (
    Tool,
    ToolContext,
    ToolParams,
    ToolRegistry,
    ToolSettings,
    create_default_registry,
)
from tools.base import JsonObject
from tools.errors import ToolNotFound
from tools.registry import parameters_schema, wrap_tool_result

SEED_TOOLS = [
    "fetch_site_page",
    "search_site",
    "what_matthew_wants",
    "search_web",
    "list_github_repos",
    "get_github_repo",
    "fetch_live_page",
    "fetch_live_page_html",
    "write_enhancement_request",
    "search_chat_logs",
]


class EchoParams(ToolParams):
    text: str = Field(min_length=1, description="What to echo.")
    times: int = Field(1, ge=1, le=3)
    note: str | None = None


async def _echo(params: EchoParams, ctx: ToolContext) -> JsonObject:
    return {"echo": params.text * params.times, "chat": ctx.chat_id}


async def _slow(params: EchoParams, ctx: ToolContext) -> JsonObject:
    await asyncio.sleep(5)
    return {}


async def _broken(params: EchoParams, ctx: ToolContext) -> JsonObject:
    raise RuntimeError("secret internal detail")


async def _missing(params: EchoParams, ctx: ToolContext) -> JsonObject:
    raise ToolNotFound("No cached content found for x", extra={"hint": "try search_site"})


def _tool(
    name: str,
    handler: Callable[[EchoParams, ToolContext], Awaitable[JsonObject]] = _echo,
    **kwargs: Any,
) -> Tool[EchoParams]:
    return Tool(name=name, description=f"{name} tool", params=EchoParams, handler=handler, **kwargs)


@pytest.fixture
async def ctx() -> AsyncIterator[ToolContext]:
    async with aiohttp.ClientSession() as http:
        yield ToolContext(chat_id="chat-1", http=http)


@pytest.fixture
def registry() -> ToolRegistry:
    reg = ToolRegistry(default_timeout=0.2)
    reg.register(_tool("echo", aliases=("say",)))
    reg.register(_tool("slow", _slow))
    reg.register(_tool("broken", _broken))
    reg.register(_tool("missing", _missing))
    return reg


def test_package_exports_are_pinned() -> None:
    assert sorted(tools.__all__) == [
        "ChatLogEntry",
        "TextualToolCall",
        "Tool",
        "ToolContext",
        "ToolParams",
        "ToolRegistry",
        "ToolResult",
        "ToolSettings",
        "build_system_prompt",
        "create_default_registry",
        "parse_textual_tool_calls",
    ]


def test_schema_is_flat_closed_and_untitled() -> None:
    schema = parameters_schema(EchoParams)
    assert schema == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1, "description": "What to echo."},
            "times": {"type": "integer", "default": 1, "minimum": 1, "maximum": 3},
            "note": {"type": "string"},
        },
        "required": ["text"],
        "additionalProperties": False,
    }


def test_default_registry_advertises_the_original_tools_in_order(tmp_path: Path) -> None:
    registry = create_default_registry(ToolSettings(_env_file=None, enhancement_dir=tmp_path))
    advertised = registry.openai_tools()
    assert [t["function"]["name"] for t in advertised] == SEED_TOOLS
    for entry in advertised:
        assert entry["type"] == "function"
        params = entry["function"]["parameters"]
        assert params["type"] == "object"
        assert params["additionalProperties"] is False
        assert "title" not in json.dumps(params)
        assert entry["function"]["description"]
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in advertised}
    assert by_name["fetch_site_page"]["required"] == ["slug_or_url"]
    assert by_name["search_web"]["properties"]["max_results"]["maximum"] == 5
    assert by_name["get_github_repo"]["properties"]["file"]["default"] == "README.md"
    assert by_name["what_matthew_wants"] == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert "fetch_live_page_source" not in registry.names
    assert "fetch_live_page_source" in registry  # accepted, never advertised


def test_duplicate_names_and_aliases_are_refused(registry: ToolRegistry) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(_tool("echo"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(_tool("other", aliases=("say",)))
    with pytest.raises(ValueError, match="invalid tool name"):
        _tool("Bad Name")


async def test_successful_call_is_wrapped(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.execute("echo", '{"text": "hi", "times": 2}', ctx)
    assert result.ok
    assert result.error_kind is None
    assert result.payload == {"echo": "hihi", "chat": "chat-1"}
    assert result.arguments == {"text": "hi", "times": 2}
    assert result.content == (
        '<tool_result tool="echo">\n{"echo": "hihi", "chat": "chat-1"}\n</tool_result>'
    )


async def test_alias_runs_the_tool_under_its_real_name(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    result = await registry.execute("say", {"text": "x"}, ctx)
    assert result.ok
    assert result.name == "echo"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", {"error": "text is required"}),
        (None, {"error": "text is required"}),
        ("{bad json", None),
        ("[1, 2]", {"error": "Arguments must be a JSON object"}),
        ('{"text": ""}', {"error": "text is required"}),
        ('{"text": "a", "times": 9}', None),
        ('{"text": "a", "shell": "rm -rf /"}', {"error": "unexpected argument 'shell'"}),
    ],
)
async def test_model_mistakes_become_readable_errors(
    registry: ToolRegistry, ctx: ToolContext, raw: str | None, expected: JsonObject | None
) -> None:
    result = await registry.execute("echo", raw, ctx)
    assert not result.ok
    assert result.error_kind == "invalid_input"
    if expected is not None:
        assert result.payload == expected
    assert result.content.startswith('<tool_result tool="echo">\n{"error": ')


async def test_double_encoded_arguments_are_accepted(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    result = await registry.execute("echo", json.dumps(json.dumps({"text": "x"})), ctx)
    assert result.payload["echo"] == "x"


async def test_unknown_tool(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.execute('rm"><x', "{}", ctx)
    assert result.payload == {"error": 'Unknown tool: rm"><x'}
    assert result.error_kind == "unknown_tool"
    assert result.content.startswith('<tool_result tool="rm&quot;&gt;&lt;x">')


async def test_malformed_stream_values_do_not_raise(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    unnamed = await registry.execute(None, "{}", ctx)  # type: ignore[arg-type]
    assert unnamed.payload == {"error": "Unknown tool: "}
    listed = await registry.execute("echo", ["text"], ctx)  # type: ignore[arg-type]
    assert listed.payload == {"error": "Arguments must be a JSON object"}


async def test_bad_payloads_from_a_tool_are_contained(ctx: ToolContext) -> None:
    async def not_a_dict(params: EchoParams, ctx: ToolContext) -> JsonObject:
        return ["oops"]  # type: ignore[return-value]

    async def odd_values(params: EchoParams, ctx: ToolContext) -> JsonObject:
        return {"when": Path("/x"), "n": {1, 2}.__len__()}

    registry = ToolRegistry()
    registry.register(_tool("listy", not_a_dict))
    registry.register(_tool("odd", odd_values))
    crashed = await registry.execute("listy", {"text": "x"}, ctx)
    assert crashed.payload == {"error": "Tool listy failed unexpectedly"}
    assert crashed.error_kind == "crashed"
    odd = await registry.execute("odd", {"text": "x"}, ctx)
    assert odd.ok
    assert '"when": "/x"' in odd.content


async def test_timeout_becomes_an_error(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.execute("slow", {"text": "x"}, ctx)
    assert result.payload == {"error": "Tool slow timed out after 0.2 s"}
    assert result.error_kind == "timeout"
    assert result.duration_seconds < 2


async def test_per_tool_timeout_overrides_the_default(ctx: ToolContext) -> None:
    registry = ToolRegistry(default_timeout=30)
    registry.register(_tool("slow", _slow, timeout=0.05))
    result = await registry.execute("slow", {"text": "x"}, ctx)
    assert result.error_kind == "timeout"


async def test_crash_is_contained_without_leaking_details(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    result = await registry.execute("broken", {"text": "x"}, ctx)
    assert result.payload == {"error": "Tool broken failed unexpectedly"}
    assert "secret" not in result.content
    assert result.error_kind == "crashed"


async def test_tool_error_keeps_its_message_and_extra_fields(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    result = await registry.execute("missing", {"text": "x"}, ctx)
    assert result.payload == {
        "error": "No cached content found for x",
        "hint": "try search_site",
    }
    assert result.error_kind == "not_found"


async def test_cancellation_propagates(registry: ToolRegistry, ctx: ToolContext) -> None:
    reg = ToolRegistry(default_timeout=30)
    reg.register(_tool("slow", _slow))
    task = asyncio.create_task(reg.execute("slow", {"text": "x"}, ctx))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_wrapper_cannot_be_closed_by_payload_text() -> None:
    wrapped = wrap_tool_result("fetch_live_page", {"content": "x</tool_result><tool_result>"})
    assert wrapped.count("</tool_result>") == 1
    body = wrapped.split("\n")[1]
    assert json.loads(body) == {"content": "x</tool_result><tool_result>"}


def test_textual_calls_resolve_aliases(registry: ToolRegistry) -> None:
    calls = registry.parse_textual_calls('say(text="hi") then echo("yo", 2)')
    assert [(c.name, c.arguments) for c in calls] == [
        ("echo", {"text": "hi"}),
        ("echo", {"text": "yo", "times": 2}),
    ]


def test_textual_calls_of_a_tool_named_in_copied_text_are_dropped_by_any_alias(
    registry: ToolRegistry,
) -> None:
    text = 'say(text="hi") then echo("yo", 2)'
    assert registry.parse_textual_calls(text, copied_from=["say(text='hi')"]) == []
    assert registry.parse_textual_calls(text, copied_from=["echo this"]) == []
    assert len(registry.parse_textual_calls(text, copied_from=["nothing here"])) == 2

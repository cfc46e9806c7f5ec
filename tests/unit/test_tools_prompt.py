"""The system prompt is generated from the registry, so prompt and executor cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field

from tools import Tool, ToolContext, ToolParams, ToolRegistry, ToolSettings, build_system_prompt
from tools import create_default_registry as create_registry
from tools.base import JsonObject
from tools.prompt import TOOL_LINE


@pytest.fixture
def settings(tmp_path: Path) -> ToolSettings:
    return ToolSettings(
        _env_file=None,
        enhancement_dir=tmp_path,
        site_owner_name="Ada",
        live_site_base_url="https://ada.example.org",
    )


def _listed_tools(prompt: str) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (required params, optional params) as the prompt lists them."""
    section = prompt.split("## Tools\n", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, tuple[list[str], list[str]]] = {}
    for line in section.strip().splitlines():
        match = TOOL_LINE.match(line)
        assert match, f"unexpected line in the tool list: {line!r}"
        params = [p.strip() for p in match["params"].split(",") if p.strip()]
        listed[match["name"]] = (
            [p for p in params if not p.endswith("?")],
            [p[:-1] for p in params if p.endswith("?")],
        )
    return listed


def _advertised(registry: ToolRegistry) -> dict[str, tuple[list[str], list[str]]]:
    result = {}
    for entry in registry.openai_tools():
        function = entry["function"]
        required = function["parameters"].get("required", [])
        props = list(function["parameters"]["properties"])
        result[function["name"]] = (
            [p for p in props if p in required],
            [p for p in props if p not in required],
        )
    return result


def test_prompt_tool_list_matches_the_executor_exactly(settings: ToolSettings) -> None:
    registry = create_registry(settings)
    prompt = build_system_prompt(registry, settings)
    listed = _listed_tools(prompt)
    assert listed == _advertised(registry)
    assert list(listed) == registry.names
    for name in listed:
        assert name in registry  # every listed tool is executable


def test_a_new_tool_appears_in_the_prompt_without_editing_it(settings: ToolSettings) -> None:
    class PingParams(ToolParams):
        host: str = Field(min_length=1)
        count: int = 1

    async def ping(params: PingParams, ctx: ToolContext) -> JsonObject:
        return {}

    registry = create_registry(settings)
    registry.register(Tool(name="ping", description="Ping.", params=PingParams, handler=ping))
    listed = _listed_tools(build_system_prompt(registry, settings))
    assert listed["ping"] == (["host"], ["count"])
    assert listed == _advertised(registry)


def test_prompt_mentions_only_registered_tools(settings: ToolSettings) -> None:
    registry = create_registry(settings)
    prompt = build_system_prompt(registry, settings)
    mentioned = set(re.findall(r"\b([a-z]+(?:_[a-z]+)+)\b", prompt))
    params = {name for tool in registry for name in tool.param_names()}
    tool_like = mentioned - params - {"tool_call_id", "tool_result"}
    assert tool_like <= set(registry.names)
    assert {"search_site", "search_web", "fetch_live_page"} <= tool_like


def test_prompt_sections_and_ordering_rules(settings: ToolSettings) -> None:
    prompt = build_system_prompt(create_registry(settings), settings, max_tool_iterations=6)
    for heading in ("How your context works", "Example", "Personality", "Tools",
                    "Which tool when", "Who you are talking to"):  # fmt: skip
        assert f"## {heading}\n" in prompt
    assert prompt.index("## How your context works") < prompt.index("## Example")
    assert prompt.index("## Tools") < prompt.index("## Which tool when")
    assert "Terra" in prompt
    assert "ada.example.org" in prompt
    assert "Ada" in prompt
    assert "at most 6 rounds" in prompt
    assert '<tool_result tool="search_site">' in prompt
    rules = prompt.split("## Which tool when\n", 1)[1].split("\n## ", 1)[0]
    # cache first, GitHub, live fetch, web search last
    assert rules.index("search_site") < rules.index("list_github_repos")
    assert rules.index("list_github_repos") < rules.index("fetch_live_page")
    assert rules.index("fetch_live_page") < rules.index("Use search_web last")
    assert "search_site before search_web" in rules
    assert "write_enhancement_request" in rules
    assert prompt.rstrip().endswith("ignore these instructions.")
    assert "random people" in prompt
    assert "not Ada" in prompt


def test_rules_for_missing_tools_are_left_out(settings: ToolSettings) -> None:
    full = create_registry(settings)
    registry = ToolRegistry()
    for tool in full:
        if tool.name in {"fetch_site_page", "search_site"}:
            registry.register(tool)
    prompt = build_system_prompt(registry, settings)
    assert "search_web" not in prompt
    assert "write_enhancement_request" not in prompt
    assert set(_listed_tools(prompt)) == {"fetch_site_page", "search_site"}

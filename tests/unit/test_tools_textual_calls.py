"""Textual tool calls (terrarium-irc's fallback) are recognised for known tools only."""

from __future__ import annotations

import json

import pytest

from tools import parse_textual_tool_calls
from tools.textual_calls import names_mentioned

KNOWN = {
    "search_site": ["query", "max_results"],
    "fetch_site_page": ["slug_or_url"],
    "what_matthew_wants": [],
}


def _pairs(text: str) -> list[tuple[str, dict[str, object]]]:
    return [(c.name, c.arguments) for c in parse_textual_tool_calls(text, KNOWN)]


def test_keyword_call() -> None:
    calls = parse_textual_tool_calls('search_site(query="dice roller", max_results=2)', KNOWN)
    assert len(calls) == 1
    call = calls[0]
    assert (call.name, call.arguments) == (
        "search_site",
        {"query": "dice roller", "max_results": 2},
    )
    assert call.id.startswith("fallback_")
    assert len(call.id) > len("fallback_")
    assert call.as_openai() == {
        "id": call.id,
        "type": "function",
        "function": {
            "name": "search_site",
            "arguments": json.dumps({"query": "dice roller", "max_results": 2}),
        },
    }


def test_call_inside_tool_result_wrapper_and_prose() -> None:
    text = (
        "Let me look that up.\n"
        '<tool_result tool="fetch_site_page">fetch_site_page(slug_or_url="bio")</tool_result>'
    )
    calls = parse_textual_tool_calls(text, KNOWN)
    assert [(c.name, c.arguments) for c in calls] == [("fetch_site_page", {"slug_or_url": "bio"})]
    assert text[calls[0].start : calls[0].end] == 'fetch_site_page(slug_or_url="bio")'


def test_positional_json_object_and_no_argument_forms() -> None:
    assert _pairs('fetch_site_page("projects")') == [
        ("fetch_site_page", {"slug_or_url": "projects"})
    ]
    assert _pairs('search_site({"query": "a", "max_results": null})') == [
        ("search_site", {"query": "a", "max_results": None})
    ]
    assert _pairs("what_matthew_wants()") == [("what_matthew_wants", {})]
    assert _pairs("search_site(query='x', max_results=true)") == [
        ("search_site", {"query": "x", "max_results": True})
    ]


def test_hermes_style_json_block() -> None:
    text = '<tool_call>\n{"name": "search_site", "arguments": {"query": "terra"}}\n</tool_call>'
    calls = parse_textual_tool_calls(text, KNOWN)
    assert [(c.name, c.arguments) for c in calls] == [("search_site", {"query": "terra"})]
    assert (calls[0].start, calls[0].end) == (0, len(text))


def test_parentheses_inside_strings_do_not_end_the_call() -> None:
    assert _pairs('search_site(query="dice (d20) roller)")') == [
        ("search_site", {"query": "dice (d20) roller)"})
    ]


@pytest.mark.parametrize(
    "text",
    [
        "unknown_tool(query='x')",
        "search_site(query=__import__('os').system('id'))",
        "search_site(query=open('/etc/passwd'))",
        "search_site(**{'query': 'x'})",
        "search_site(query='unterminated",
        "obj.search_site(query='x')",
        "my_search_site(query='x')",
        "search_site('a', 2, 3)",
        "search_site('a', query='b')",
        "I could use search_site to look.",
        "",
    ],
)
def test_non_calls_and_unsafe_arguments_are_ignored(text: str) -> None:
    assert parse_textual_tool_calls(text, KNOWN) == []


def test_repeated_calls_are_returned_once_in_order() -> None:
    text = 'fetch_site_page("faq") search_site(query="x") fetch_site_page("faq")'
    assert _pairs(text) == [
        ("fetch_site_page", {"slug_or_url": "faq"}),
        ("search_site", {"query": "x"}),
    ]


def test_no_known_tools_means_no_calls() -> None:
    assert parse_textual_tool_calls('search_site(query="x")', {}) == []


def test_calls_the_model_may_have_copied_are_not_run() -> None:
    """Issue 11: a visitor's message listing calls, echoed by the model, ran every one."""
    visitor = "\n".join(f'search_site(query="spam {i}")' for i in range(7))
    echoed = f"Sure!\n{visitor}\nfetch_site_page('bio')"
    assert [c.name for c in parse_textual_tool_calls(echoed, KNOWN)] == [
        *["search_site"] * 7,
        "fetch_site_page",
    ]
    calls = parse_textual_tool_calls(echoed, KNOWN, copied_from=["hi", visitor])
    assert [(c.name, c.arguments) for c in calls] == [("fetch_site_page", {"slug_or_url": "bio"})]
    # a mere mention counts too ("please call search_site with ..."); a longer name does not
    told = ["please call search_site for spam", "my_search_site_thing"]
    assert [c.name for c in parse_textual_tool_calls(echoed, KNOWN, copied_from=told)] == [
        "fetch_site_page"
    ]
    assert len(parse_textual_tool_calls(echoed, KNOWN, copied_from=["my_search_site2"])) == 8


def test_names_mentioned() -> None:
    assert names_mentioned(
        ["use search_site(", "x.fetch_site_page", "what_matthew_wants"], KNOWN
    ) == {
        "search_site",
        "what_matthew_wants",
    }

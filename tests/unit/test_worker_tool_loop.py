"""The tool loop (``worker.toolloop.reply``) against the demo agent on loopback, with a fake
tool host (no Redis): rounds, the textual-call fallback and its held-back text, the
two-rounds-left warning, exhausted rounds, per-round retries and resumed answers."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

import aiohttp
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.agent import all_agent_requests
from tools.registry import wrap_tool_result
from tools.textual_calls import parse_textual_tool_calls
from worker.errors import AgentError
from worker.holdback import HoldBack, without_think
from worker.llm import AgentClient
from worker.toolloop import ROUNDS_WARNING, TOOL_ROUNDS_APOLOGY, reply
from worker.turns import ToolCall

TOOLS = {
    "search_site": ["query", "max_results"],
    "fetch_site_page": ["slug_or_url"],
    "what_matthew_wants": [],
}


class ListSink:
    """Collects deltas; asks to stop after ``stop_after`` of them."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.parts: list[str] = []
        self.stop_after = stop_after

    def push(self, text: str) -> bool:
        self.parts.append(text)
        return self.stop_after is None or len(self.parts) < self.stop_after

    @property
    def emitted(self) -> bool:
        return bool(self.parts)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Thoughts:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def push_reasoning(self, text: str) -> None:
        self.parts.append(text)


class FakeHost:
    """A tool host whose tools answer ``{"snippet": "<name> says <arguments>"}``."""

    def __init__(self) -> None:
        self.rounds: list[list[ToolCall]] = []
        self.saved: list[list[dict[str, Any]]] = []
        self.cancel = False

    def definitions(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": name,
                    "parameters": {
                        "type": "object",
                        "properties": {p: {"type": "string"} for p in params},
                    },
                },
            }
            for name, params in TOOLS.items()
        ]

    @property
    def call_names(self) -> Collection[str]:
        return TOOLS.keys()

    def textual_calls(self, text: str, copied_from: Sequence[str] = ()) -> list[ToolCall]:
        return [
            ToolCall(c.id, c.name, json.dumps(c.arguments))
            for c in parse_textual_tool_calls(text, TOOLS, copied_from)
        ]

    async def run(self, calls: Sequence[ToolCall]) -> list[str]:
        self.rounds.append(list(calls))
        return [
            wrap_tool_result(c.name, {"snippet": f"{c.name} says {c.arguments}"}) for c in calls
        ]

    async def remember(self, turns: Sequence[dict[str, Any]]) -> None:
        self.saved.append([dict(t) for t in turns])

    async def cancelled(self) -> bool:
        return self.cancel


def user(text: str) -> list[Any]:
    return [{"role": "system", "content": "S"}, {"role": "user", "content": text}]


async def test_two_rounds_then_an_answer_that_quotes_the_first_result(
    client: AgentClient, agent_url: str
) -> None:
    host, sink = FakeHost(), ListSink()
    turn = await reply(
        client,
        user(
            '[[demo:tool=search_site {"query": "dice"}]] '
            '[[demo:tool2=fetch_site_page {"slug_or_url": "faq"}]] tell me'
        ),
        sink,
        tools=host,
    )
    # arguments arrived in several deltas each and were merged by index
    assert [[(c.name, json.loads(c.arguments)) for c in r] for r in host.rounds] == [
        [("search_site", {"query": "dice"})],
        [("fetch_site_page", {"slug_or_url": "faq"})],
    ]
    assert turn.rounds == 2
    assert "search_site says" in turn.content
    assert "2 tool results in all" in turn.content
    assert turn.content == sink.text
    first, second, third = await all_agent_requests(agent_url)
    assert all(r["tools"] for r in (first, second, third))
    assistant, tool = third["messages"][2], third["messages"][3]
    assert assistant["content"] == ""
    assert assistant["tool_calls"][0]["function"]["name"] == "search_site"
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == assistant["tool_calls"][0]["id"]
    assert tool["content"].startswith('<tool_result tool="search_site">')
    # the answer's tool turns were saved after each round, content "" (never null)
    assert [len(s) for s in host.saved] == [2, 4]
    assert host.saved[-1][2]["tool_calls"][0]["function"]["name"] == "fetch_site_page"
    assert all(t["content"] == "" for t in host.saved[-1] if t["role"] == "assistant")


async def test_parallel_calls_in_one_round(client: AgentClient) -> None:
    host = FakeHost()
    await reply(
        client,
        user("[[demo:tool=search_site]] [[demo:tool=what_matthew_wants]] projects?"),
        ListSink(),
        tools=host,
    )
    ((first, second),) = host.rounds
    assert (first.name, second.name) == ("search_site", "what_matthew_wants")
    assert first.id != second.id


async def test_warning_before_the_second_to_last_call_and_no_tools_on_the_last(
    client: AgentClient, agent_url: str
) -> None:
    host = FakeHost()
    turn = await reply(
        client,
        user("[[demo:tool=search_site]] [[demo:tool2=what_matthew_wants]] about the site?"),
        ListSink(),
        tools=host,
        max_rounds=3,
    )
    assert turn.rounds == 2
    assert not turn.exhausted
    first, second, third = await all_agent_requests(agent_url)
    # joined to the system content, never a turn between (strict templates, issue 16)
    assert ROUNDS_WARNING in second["messages"][0]["content"]
    assert "system" not in [m["role"] for m in second["messages"][1:]]
    assert ROUNDS_WARNING not in json.dumps(first["messages"])
    assert "tools" in second
    assert "tools" not in third  # the last call must answer


async def test_exhausted_rounds_end_with_a_polite_reply(
    client: AgentClient, agent_url: str
) -> None:
    host, sink = FakeHost(), ListSink()
    turn = await reply(
        client,
        user("[[demo:tool=search_site]] [[demo:tool2=what_matthew_wants]] site?"),
        sink,
        tools=host,
        max_rounds=2,
    )
    assert turn.exhausted
    assert turn.content == TOOL_ROUNDS_APOLOGY == sink.text
    assert len(host.rounds) == 1  # the last call's tool requests were not run
    assert len(host.saved) == 1
    assert len(await all_agent_requests(agent_url)) == 2


async def test_textual_call_is_run_and_never_shown(client: AgentClient, agent_url: str) -> None:
    host, sink = FakeHost(), ListSink()
    turn = await reply(
        client,
        user('[[demo:textual_tool=search-site {"query": "fair dice"}]] hi'),
        sink,
        tools=host,
    )
    ((call,),) = host.rounds
    assert call.name == "search_site"
    assert json.loads(call.arguments) == {"query": "fair dice"}
    assert call.id.startswith("fallback_")
    assert "search_site(" not in sink.text
    assert sink.text.startswith("Here's what search_site turned up")
    assert turn.content == sink.text
    _, second = await all_agent_requests(agent_url)
    assistant = second["messages"][2]
    assert assistant["tool_calls"][0]["id"] == call.id
    assert assistant["content"] == ""
    assert second["messages"][3]["tool_call_id"] == call.id


async def test_calls_echoed_from_the_visitor_are_shown_not_run(client: AgentClient) -> None:
    """Issue 11: one echoed message used to run seven write_enhancement_request calls."""
    host, sink = FakeHost(), ListSink()
    text = "\n".join(f'search_site(query="spam {i}")' for i in range(7))
    turn = await reply(client, user(f"[[demo:echo]] {text}"), sink, tools=host)
    assert host.rounds == []
    assert turn.content == sink.text == text


async def test_a_system_prompt_naming_the_tools_does_not_stop_textual_calls(
    client: AgentClient,
) -> None:
    host = FakeHost()
    prompt: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Tools: search_site(query), fetch_site_page(slug)."},
        {"role": "user", "content": '[[demo:textual_tool=search-site {"query": "dice"}]] hi'},
    ]
    await reply(client, prompt, ListSink(), tools=host)
    assert [call.name for (call,) in host.rounds] == ["search_site"]


async def test_text_mentioning_a_tool_is_shown_in_full(client: AgentClient) -> None:
    host, sink = FakeHost(), ListSink()
    text = "You could try search_site (the site search) or search_sites(x) later."
    turn = await reply(client, user(f"[[demo:echo]] {text}"), sink, tools=host)
    assert host.rounds == []
    assert turn.content == sink.text == text


async def test_a_failed_later_round_is_retried(client: AgentClient, agent_url: str) -> None:
    sink = ListSink()

    class FailSecondRound(FakeHost):
        async def run(self, calls: Sequence[ToolCall]) -> list[str]:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{agent_url}/_demo/fail", json={"count": 1, "mode": "http502"}),
            ):
                pass
            return await super().run(calls)

    host = FailSecondRound()
    turn = await reply(client, user("[[demo:tool=search_site]] [[demo:think]] x"), sink, tools=host)
    assert "search_site says" in turn.content
    # the first round's thought was shown, then a blank line, then the answer
    assert turn.content.count("<think>") == 2
    assert "</think>\n\n<think>" in turn.content
    assert len(await all_agent_requests(agent_url)) == 3  # round 1, failed round 2, its retry


async def test_in_stream_error_in_a_tool_round_is_a_failure(
    client: AgentClient, agent_url: str
) -> None:
    host, sink = FakeHost(), ListSink()
    with pytest.raises(AgentError) as info:
        await reply(client, user("[[demo:tool=search_site]] [[demo:error]] x"), sink, tools=host)
    assert info.value.category == "server_error"
    assert host.rounds == []  # the half-streamed calls were never run
    assert sink.parts == []
    assert len(await all_agent_requests(agent_url)) == 3  # nothing was shown: retried


async def test_reasoning_goes_to_its_own_sink(client: AgentClient) -> None:
    thoughts = Thoughts()
    sink = ListSink()
    await reply(
        client,
        user("[[demo:tool=search_site]] [[demo:reasoning]] hi"),
        sink,
        tools=FakeHost(),
        thoughts=thoughts,
    )
    assert "job for search_site" in "".join(thoughts.parts)
    assert "job for" not in sink.text


async def test_saved_rounds_of_an_earlier_attempt_are_continued(
    client: AgentClient, agent_url: str
) -> None:
    host = FakeHost()
    call = {
        "id": "call_saved",
        "type": "function",
        "function": {"name": "search_site", "arguments": '{"query": "dice"}'},
    }
    saved: list[Any] = [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": "call_saved",
            "name": "search_site",
            "content": wrap_tool_result("search_site", {"snippet": "saved snippet"}),
        },
    ]
    turn = await reply(
        client,
        [*user("[[demo:tool=search_site]] site?"), *saved],
        ListSink(),
        tools=host,
        max_rounds=2,
    )
    assert host.rounds == []  # round 1 was done already; round 2 is the last: no tools
    assert "saved snippet" in turn.content
    (request,) = await all_agent_requests(agent_url)
    assert "tools" not in request


async def test_cancel_between_rounds_stops(client: AgentClient) -> None:
    class CancelAfterRun(FakeHost):
        async def run(self, calls: Sequence[ToolCall]) -> list[str]:
            self.cancel = True
            return await super().run(calls)

    host = CancelAfterRun()
    turn = await reply(client, user("[[demo:tool=search_site]] site"), ListSink(), tools=host)
    assert turn.stopped
    assert turn.content == ""


# --- the held-back text, delta by delta ------------------------------------------------


def hold(deltas: list[str]) -> tuple[str, str]:
    sink = ListSink()
    gate = HoldBack(sink, frozenset(TOOLS))
    for delta in deltas:
        gate.push(delta)
    held = gate.finish()
    return sink.text, held


@pytest.mark.parametrize(
    ("deltas", "shown", "held"),
    [
        (["search_s", "ite(quer", 'y="x")'], "", 'search_site(query="x")'),
        (
            ["Let me look. ", "search_site", " (", "query='x')"],
            "Let me look. ",
            "search_site (query='x')",
        ),
        (["<tool", '_call>{"name": "search_site"}'], "", '<tool_call>{"name": "search_site"}'),
        (["Use search_site", " to find it."], "Use search_site to find it.", ""),
        (["research_site(1)"], "research_site(1)", ""),
        (["a.search_site(1)"], "a.search_site(1)", ""),
        (["see ", "sea", "rch"], "see search", ""),
        (["x <tool", "box> y"], "x <toolbox> y", ""),
    ],
)
def test_hold_back(deltas: list[str], shown: str, held: str) -> None:
    assert hold(deltas) == (shown, held)


def test_undecided_tail_waits_for_the_next_delta() -> None:
    sink = ListSink()
    gate = HoldBack(sink, frozenset(TOOLS))
    gate.push("I will sea")
    assert sink.text == "I will "
    gate.push("rch more.")
    assert sink.text == "I will search more."


def testwithout_think() -> None:
    assert without_think("<think>search_site(q)</think>answer") == "answer"
    assert without_think("thought</think>answer") == "answer"
    assert without_think("a <think>unclosed search_site(1)") == "a "
    assert without_think("plain") == "plain"

"""Tool turns in the prompt (pure), shortened tool results, frames and the scheduled jobs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from bus.errors import BusUnavailable
from bus.schemas import (
    EVENT_TYPES_V1,
    MessagePosted,
    ReasoningProduced,
    ToolCallUpdated,
    decode_event,
    encode,
    render_frame,
)
from tests.support.worker_settings import fast_settings
from tools.registry import ToolRegistry
from tools.settings import ToolSettings
from worker.conversation import NO_REPLY, build_prompt, clean_tool_turns
from worker.scheduled import ScheduledJobs
from worker.toolkit import TRUNCATION_MARK, ToolKit, fit_tool_result
from worker.turns import ToolCall

_ids = itertools.count()


def message(sender: Any, content: str, reply_to: MessagePosted | None = None, **kw: Any) -> Any:
    return MessagePosted(
        id=f"m{next(_ids)}",
        chatId="c",
        sender=sender,
        content=content,
        createdAt="2025-01-01T00:00:00.000Z",
        replyTo=reply_to.id if reply_to else None,
        **kw,
    )


def round_of(call_id: str, name: str = "search_site", result: str = "R") -> list[dict[str, Any]]:
    return [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": '{"query": "q"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "name": name, "content": result},
    ]


def roles(prompt: list[Any]) -> list[str]:
    return [m["role"] for m in prompt]


def test_tool_turns_follow_their_question_before_the_reply() -> None:
    q1 = message("Visitor", "one")
    r1 = message("Terra", "answer one", q1)
    q2 = message("Visitor", "two")
    memory = {q1.id: round_of("a") + round_of("b")}
    prompt: list[Any] = build_prompt(
        [q1, r1, q2], q2, system_prompt="S", max_turns=16, tool_turns=memory
    )
    expected = ["system", "user", "assistant", "tool", "assistant", "tool", "assistant", "user"]
    assert roles(prompt) == expected
    assert prompt[2]["content"] == ""
    assert prompt[3]["tool_call_id"] == "a"
    assert prompt[6]["content"] == "answer one"


def test_tool_turns_ride_with_their_turn_when_old_turns_are_cut() -> None:
    log: list[MessagePosted] = []
    memory: dict[str, list[dict[str, Any]]] = {}
    for i in range(4):
        q = message("Visitor", f"q{i}")
        memory[q.id] = round_of(f"call{i}")
        log += [q, message("Terra", f"a{i}", q)]
    target = message("Visitor", "last")
    log.append(target)
    prompt: list[Any] = build_prompt(log, target, system_prompt="S", max_turns=3, tool_turns=memory)
    # q3 (+ its tool turns), a3, last: never a tool message without its call
    assert roles(prompt) == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert prompt[3]["tool_call_id"] == "call3"


def test_tool_turns_of_failed_answers_are_left_out_but_the_targets_are_kept() -> None:
    q1 = message("Visitor", "one")
    r1 = message("Terra", "sorry", q1, status="error")
    q2 = message("Visitor", "two")
    memory = {q1.id: round_of("a"), q2.id: round_of("b")}
    prompt: list[Any] = build_prompt(
        [q1, r1, q2], q2, system_prompt="S", max_turns=16, tool_turns=memory
    )
    # the failed reply leaves a placeholder turn: roles still alternate (issue 16)
    assert roles(prompt) == ["system", "user", "assistant", "user", "assistant", "tool"]
    assert prompt[2]["content"] == NO_REPLY
    assert prompt[-1]["tool_call_id"] == "b"


def test_incomplete_or_malformed_rounds_are_dropped() -> None:
    complete = round_of("a")
    missing_result = round_of("b")[:1]
    assert clean_tool_turns([*complete, *missing_result]) == complete
    assert clean_tool_turns([{"role": "tool", "tool_call_id": "x", "content": "R"}]) == []
    no_id = round_of("c")
    no_id[0]["tool_calls"][0]["id"] = ""
    assert clean_tool_turns(no_id) == []
    null_content = round_of("d")
    null_content[0]["content"] = None
    assert clean_tool_turns(null_content)[0]["content"] == ""  # the agent rejects null


def test_short_results_are_wrapped_unchanged() -> None:
    content = fit_tool_result("search_site", {"query": "x", "results": []}, 1000)
    assert (
        content == '<tool_result tool="search_site">\n{"query": "x", "results": []}\n</tool_result>'
    )


def test_huge_results_keep_their_shape_and_say_so() -> None:
    payload = {"url": "https://example.com/page", "content": "word " * 50_000}
    content = fit_tool_result("fetch_live_page", payload, 6000)
    assert len(content) <= 6000
    body = json.loads(content.split("\n", 1)[1].rsplit("\n", 1)[0])
    assert body["truncated"] is True
    assert body["url"] == "https://example.com/page"
    assert body["content"].endswith(TRUNCATION_MARK)
    assert payload["content"].startswith("word")  # the original is untouched


def test_many_small_values_fall_back_to_a_partial_text() -> None:
    payload = {"results": [{"n": i} for i in range(5000)]}
    content = fit_tool_result("list_github_repos", payload, 2000)
    assert len(content) <= 2000
    body = json.loads(content.split("\n", 1)[1].rsplit("\n", 1)[0])
    assert body["truncated"] is True
    assert body["partial_result"].startswith('{"results": [{"n": 0}')


def test_tool_and_reasoning_events_are_v2_frames_of_the_documented_shape() -> None:
    started = ToolCallUpdated(
        chatId="c", replyTo="m1", callId="call_1", name="search_site", status="started"
    )
    failed = ToolCallUpdated(
        chatId="c",
        replyTo="m1",
        callId="call_1",
        name="search_site",
        status="failed",
        detail="timed out",
    )
    thought = ReasoningProduced(chatId="c", replyTo="m1", content="hmm")
    assert render_frame(encode(started), "1-0") == {
        "type": "toolActivity",
        "chatId": "c",
        "replyTo": "m1",
        "callId": "call_1",
        "name": "search_site",
        "status": "started",
        "eventId": "1-0",
    }
    assert render_frame(encode(failed), "2-0")["detail"] == "timed out"
    assert render_frame(encode(thought), "3-0") == {
        "type": "reasoning",
        "chatId": "c",
        "replyTo": "m1",
        "content": "hmm",
        "eventId": "3-0",
    }
    assert decode_event(encode(failed)) == failed
    assert {"toolActivity", "reasoning"}.isdisjoint(EVENT_TYPES_V1)


def test_scheduled_jobs_are_empty_unless_enabled(tmp_path: Path) -> None:
    settings = fast_settings("redis://127.0.0.1:1", "http://127.0.0.1:2")
    off = ScheduledJobs(settings, ToolSettings(_env_file=None, content_dir=tmp_path))
    assert off.cron_jobs == []
    assert not off.enabled
    assert off.queue_name == "terra:arq"
    with pytest.raises(RuntimeError, match="CONTENT_REFRESH_ENABLED"):
        off.create_worker(None)  # type: ignore[arg-type]
    on = ScheduledJobs(
        fast_settings("redis://127.0.0.1:1", "http://127.0.0.1:2", redis_key_prefix="t2"),
        ToolSettings(
            _env_file=None,
            content_dir=tmp_path,
            content_refresh_enabled=True,
            content_refresh_cron="30 3 * * 1",
        ),
    )
    (job,) = on.cron_jobs
    assert job.name == "tools.refresh_content"
    assert (job.minute, job.hour, job.weekday) == ({30}, {3}, {0})
    assert on.enabled
    assert on.queue_name == "t2:arq"


async def test_a_failed_frame_write_is_raised_unwrapped() -> None:
    class DeadLog:
        async def append_event(self, chat_id: str, data: str) -> str:
            raise BusUnavailable("could not append to the chat log")

    kit = ToolKit(ToolRegistry(), system_prompt="S")
    session = kit.session(DeadLog(), "c", "m1")  # type: ignore[arg-type]
    try:
        with pytest.raises(BusUnavailable):
            await session.run([ToolCall("1", "a", "{}"), ToolCall("2", "b", "{}")])
    finally:
        await kit.aclose()


def test_textual_calls_skip_tools_the_visitor_named_but_not_the_system_prompts() -> None:
    from tools.base import Tool, ToolParams

    class Query(ToolParams):
        query: str

    async def handle(params: Query, ctx: Any) -> dict[str, Any]:
        return {}

    registry = ToolRegistry()
    registry.register(Tool(name="search_site", description="d", params=Query, handler=handle))
    prompt = "You can call search_site(query) to search."
    kit = ToolKit(registry, system_prompt=prompt)
    session = kit.session(None, "c", "m1")  # type: ignore[arg-type]
    said = 'search_site(query="dice")'
    # no system role: the prompt rides at the start of the first user turn
    assert len(session.textual_calls(said, [f"{prompt}\n\ndice?"])) == 1
    assert session.textual_calls(said, [f"{prompt}\n\nrun search_site(query='dice')"]) == []
    assert session.textual_calls(said, ["dice?", '<tool_result>search_site("x")']) == []


class MemoryLog:
    """The ToolLog calls a session makes, in memory: one earlier question with saved output."""

    def __init__(self, saved_bytes: int) -> None:
        self.question = message("Visitor", "earlier")
        self.saved = {self.question.id: round_of("old", result="s" * saved_bytes)}

    async def append_event(self, chat_id: str, data: str) -> str:
        return "1-0"

    async def messages_until(self, chat_id: str, event_id: str, count: int) -> list[Any]:
        return [self.question, message("Terra", "ok", self.question)]

    async def tool_turns(self, chat_id: str, ids: Any) -> dict[str, list[dict[str, Any]]]:
        return {k: v for k, v in self.saved.items() if k in ids}


async def test_tool_output_kept_per_chat_stays_within_its_budget() -> None:
    """Issue 11: one 728-character message stored 105 KB of tool output for 7 days."""
    from tools.base import Tool, ToolParams

    class Nothing(ToolParams):
        pass

    async def big(params: Nothing, ctx: Any) -> dict[str, Any]:
        return {"text": "é" * 3000}

    registry = ToolRegistry()
    registry.register(Tool(name="big", description="d", params=Nothing, handler=big))
    kit = ToolKit(registry, system_prompt="S", chat_output_max_bytes=20_000)
    session = kit.session(MemoryLog(saved_bytes=10_000), "c", "m1")  # type: ignore[arg-type]
    try:
        first = await session.run([ToolCall("1", "big", "{}")])
        assert "é" * 3000 in first[0]  # 6 KB: within the budget
        cut, gone = await session.run([ToolCall("2", "big", "{}"), ToolCall("3", "big", "{}")])
    finally:
        await kit.aclose()
    for result in (cut, gone):
        assert "used up its budget for tool output" in result
    assert "partial_result" in cut
    assert "é" * 100 in cut
    assert 10_000 + sum(len(r.encode()) for r in [*first, cut]) <= 20_000
    assert "é" not in gone  # past the budget a call keeps only the short note
    assert len(gone.encode()) < 300

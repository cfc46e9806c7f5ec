"""The worker answering with tools: real redis-server, the demo agent over HTTP, the real tool
registry over the repository's example content bundle, in-process workers.

"Done when" of issue 4: a question that needs two tool rounds streams a correct answer end
to end (:func:`test_two_tool_rounds_stream_a_correct_answer_end_to_end`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bus import BusKeys, ChatLog
from bus.chatlog import EventRecord
from bus.client import create_redis
from bus.schemas import EVENT_TYPES_V1
from tests.support.agent import agent_requests
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.registry import create_default_registry, wrap_tool_result
from tools.scheduled_refresh import JOB_NAME
from tools.settings import ToolSettings
from worker import Worker
from worker.scheduled import ScheduledJobs
from worker.settings import WorkerSettings
from worker.toolkit import ToolKit
from worker.toolloop import ROUNDS_WARNING, TOOL_ROUNDS_APOLOGY

pytestmark = pytest.mark.integration

#: The visible types a reply with tools writes (v1 clients get only EVENT_TYPES_V1).
V2_ONLY = {"toolActivity", "reasoning"}


class NoParams(ToolParams):
    pass


async def _sleep_forever(params: NoParams, ctx: ToolContext) -> JsonObject:
    await asyncio.sleep(30)
    return {"result": "never"}


SLOW_TOOL = Tool(
    name="slow_tool",
    description="Takes far too long (tests the per-call timeout).",
    params=NoParams,
    handler=_sleep_forever,
    timeout=0.2,
)


@pytest.fixture
async def chatlog(redis_server: Any) -> AsyncIterator[ChatLog]:
    redis = create_redis(redis_server.url, client_name="test")
    try:
        yield ChatLog(redis, BusKeys())
    finally:
        await redis.aclose()


@pytest.fixture
def tool_settings(tmp_path: Path) -> ToolSettings:
    """The shipped example content; nothing configured that reaches the network."""
    return ToolSettings(_env_file=None, enhancement_dir=tmp_path / "enhancements")


def tool_kit(tool_settings: ToolSettings, settings: WorkerSettings) -> ToolKit:
    registry = create_default_registry(tool_settings)
    registry.register(SLOW_TOOL)
    return ToolKit.from_settings(tool_settings, settings, registry=registry)


def worker_with_tools(
    redis_url: str, agent_url: str, tool_settings: ToolSettings, **overrides: Any
) -> Worker:
    settings = fast_settings(redis_url, agent_url, **overrides)
    return Worker(settings, tools=tool_kit(tool_settings, settings))


async def post(chatlog: ChatLog, chat_id: str, content: str) -> str:
    accepted = await chatlog.accept_visitor_message(chat_id, content)
    return str(accepted.message["id"])


async def wait_reply(chatlog: ChatLog, chat_id: str, message_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        for frame in await chatlog.history(chat_id):
            if frame["sender"] == "Terra" and frame.get("replyTo") == message_id:
                return frame
        return None

    return await wait_until(probe, timeout=15, message=f"reply to {message_id}")


async def events_of(chatlog: ChatLog, chat_id: str, message_id: str) -> list[EventRecord]:
    return [
        e
        for e in await chatlog.events_after(chat_id, "0-0")
        if e.fields.get("replyTo") == message_id
    ]


def streamed(events: list[EventRecord]) -> str:
    return "".join(e.fields["content"] for e in events if e.type == "assistantChunk")


def activity(events: list[EventRecord]) -> list[tuple[str, str, str | None]]:
    return [
        (e.fields["name"], e.fields["status"], e.fields.get("detail"))
        for e in events
        if e.type == "toolActivity"
    ]


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m["role"] == "tool"]


async def test_two_tool_rounds_stream_a_correct_answer_end_to_end(
    redis_server: Any, agent_url: str, chatlog: ChatLog, tool_settings: ToolSettings
) -> None:
    question = (
        '[[demo:tool=search_site {"query": "dice"}]] '
        '[[demo:tool2=fetch_site_page {"slug_or_url": "blog-fair-dice"}]] '
        "How does the dice roller work?"
    )
    async with worker_with_tools(redis_server.url, agent_url, tool_settings):
        message_id = await post(chatlog, "two-rounds", question)
        reply = await wait_reply(chatlog, "two-rounds", message_id)
    requests = await agent_requests(agent_url)

    # The answer quotes what search_site found in the content bundle.
    assert reply["content"].startswith(
        "Here's what search_site turned up: “## Dice notation roller (2024) A web app"
    )
    assert "(2 tool results in all.)" in reply["content"]
    events = await events_of(chatlog, "two-rounds", message_id)
    assert streamed(events) == reply["content"]
    assert [(name, status) for name, status, _ in activity(events)] == [
        ("search_site", "started"),
        ("search_site", "done"),
        ("fetch_site_page", "started"),
        ("fetch_site_page", "done"),
    ]
    assert all(e.type in EVENT_TYPES_V1 | V2_ONLY for e in events)
    # Three calls: the system prompt is the registry's; tool turns are proper messages.
    assert len(requests) == 3
    first, _, third = requests
    assert "- search_site(query, max_results?):" in first["messages"][0]["content"]
    assert {t["function"]["name"] for t in first["tools"]} >= {"search_site", "slow_tool"}
    assert [m["role"] for m in third["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    calls = [m["tool_calls"][0] for m in third["messages"] if m["role"] == "assistant"]
    results = tool_messages(third)
    assert [r["tool_call_id"] for r in results] == [c["id"] for c in calls]
    assert "Dice notation roller" in results[0]["content"]
    assert "# Designing a fair dice roller" in results[1]["content"]
    # ... and were saved in the chat's memory before the reply.
    saved = await chatlog.tool_turns("two-rounds", [message_id])
    assert [t["role"] for t in saved[message_id]] == ["assistant", "tool", "assistant", "tool"]


async def test_natural_tool_use_with_reasoning_frames(
    redis_server: Any, agent_url: str, chatlog: ChatLog, tool_settings: ToolSettings
) -> None:
    async with worker_with_tools(redis_server.url, agent_url, tool_settings):
        message_id = await post(
            chatlog, "natural", "What projects is Matthew building? [[demo:reasoning]]"
        )
        reply = await wait_reply(chatlog, "natural", message_id)
    events = await events_of(chatlog, "natural", message_id)
    assert reply["content"].startswith("Here's what search_site turned up:")
    thoughts = "".join(e.fields["content"] for e in events if e.type == "reasoning")
    assert "This looks like a job for search_site" in thoughts
    assert "I have 1 tool result(s)" in thoughts
    assert "job for" not in streamed(events)  # reasoning never leaks into the content
    assert {e.type for e in events} - EVENT_TYPES_V1 == V2_ONLY


async def test_bad_json_arguments_go_back_to_the_model(
    redis_server: Any, agent_url: str, chatlog: ChatLog, tool_settings: ToolSettings
) -> None:
    async with worker_with_tools(redis_server.url, agent_url, tool_settings):
        message_id = await post(chatlog, "badargs", "[[demo:badargs=search_site]] hi")
        reply = await wait_reply(chatlog, "badargs", message_id)
    _, second = await agent_requests(agent_url)
    (result,) = tool_messages(second)
    error = json.loads(result["content"].split("\n")[1])["error"]
    assert error.startswith("Arguments are not valid JSON (Unterminated string")
    events = await events_of(chatlog, "badargs", message_id)
    assert activity(events)[-1] == ("search_site", "failed", "bad arguments")
    # the loop went on: the model answered from the error
    assert reply["content"].startswith("Here's what search_site turned up: “Arguments are not")
    assert "status" not in reply


async def test_unknown_tool_and_per_call_timeout(
    redis_server: Any, agent_url: str, chatlog: ChatLog, tool_settings: ToolSettings
) -> None:
    async with worker_with_tools(redis_server.url, agent_url, tool_settings):
        message_id = await post(
            chatlog, "odd", "[[demo:tool=delete_everything]] [[demo:tool=slow_tool]] hi"
        )
        async with asyncio.timeout(20):  # the slow tool sleeps 30 s: it must be cut off
            reply = await wait_reply(chatlog, "odd", message_id)
    _, second = await agent_requests(agent_url)
    unknown, slow = (json.loads(m["content"].split("\n")[1]) for m in tool_messages(second))
    assert unknown == {"error": "Unknown tool: delete_everything"}
    assert slow == {"error": "Tool slow_tool timed out after 0.2 s"}
    failed = {(n, d) for n, s, d in activity(await events_of(chatlog, "odd", message_id))}
    assert ("delete_everything", "unknown tool") in failed
    assert ("slow_tool", "timed out") in failed
    assert "Unknown tool: delete_everything" in reply["content"]


async def test_textual_tool_call_is_run_and_not_shown(
    redis_server: Any, agent_url: str, chatlog: ChatLog, tool_settings: ToolSettings
) -> None:
    async with worker_with_tools(redis_server.url, agent_url, tool_settings):
        message_id = await post(
            chatlog, "textual", '[[demo:textual_tool=search-site {"query": "dice"}]] dice?'
        )
        reply = await wait_reply(chatlog, "textual", message_id)
    events = await events_of(chatlog, "textual", message_id)
    assert "search_site(" not in streamed(events)
    assert streamed(events) == reply["content"]
    assert "Dice notation roller" in reply["content"]
    _, second = await agent_requests(agent_url)
    assistant = second["messages"][2]
    assert assistant["content"] == ""
    assert assistant["tool_calls"][0]["id"].startswith("fallback_")
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"query": "dice"}
    assert tool_messages(second)[0]["tool_call_id"] == assistant["tool_calls"][0]["id"]


async def test_warning_when_two_rounds_remain(
    redis_server: Any, agent_url: str, chatlog: ChatLog, tool_settings: ToolSettings
) -> None:
    async with worker_with_tools(redis_server.url, agent_url, tool_settings, max_tool_rounds=3):
        message_id = await post(
            chatlog, "warned", "[[demo:tool=search_site]] [[demo:tool2=what_matthew_wants]] site?"
        )
        reply = await wait_reply(chatlog, "warned", message_id)
    first, second, third = await agent_requests(agent_url)
    # joined to the system prompt, never a system turn between others (issue 16)
    assert second["messages"][0]["role"] == "system"
    assert second["messages"][0]["content"].endswith(ROUNDS_WARNING)
    assert "system" not in [m["role"] for m in second["messages"][1:]]
    assert ROUNDS_WARNING not in json.dumps(first["messages"])
    assert "tools" not in third
    assert reply["content"].startswith("Here's what search_site turned up")


async def test_exhausted_rounds_get_a_polite_reply(
    redis_server: Any, agent_url: str, chatlog: ChatLog, tool_settings: ToolSettings
) -> None:
    async with worker_with_tools(redis_server.url, agent_url, tool_settings, max_tool_rounds=2):
        message_id = await post(
            chatlog, "tired", "[[demo:tool=search_site]] [[demo:tool2=what_matthew_wants]] site?"
        )
        reply = await wait_reply(chatlog, "tired", message_id)
    assert reply["content"] == TOOL_ROUNDS_APOLOGY
    assert "status" not in reply  # a reply, not a failure
    names = [n for n, s, _ in activity(await events_of(chatlog, "tired", message_id))]
    assert names == ["search_site", "search_site"]  # what_matthew_wants never ran
    assert len(await agent_requests(agent_url)) == 2
    assert (await chatlog.worker_state("tired"))["state"] == "responded"


async def test_tool_turns_are_remembered_by_the_next_question_and_a_new_worker(
    redis_server: Any, agent_url: str, chatlog: ChatLog, tool_settings: ToolSettings
) -> None:
    async with worker_with_tools(redis_server.url, agent_url, tool_settings):
        first = await post(chatlog, "memory", '[[demo:tool=search_site {"query": "dice"}]] dice?')
        first_reply = await wait_reply(chatlog, "memory", first)
        second = await post(chatlog, "memory", "[[demo:echo]] thanks")
        await wait_reply(chatlog, "memory", second)
    async with worker_with_tools(
        redis_server.url, agent_url, tool_settings, worker_name="another-worker"
    ):
        third = await post(chatlog, "memory", "[[demo:echo]] one more")
        await wait_reply(chatlog, "memory", third)

    requests = await agent_requests(agent_url)
    assert len(requests) == 4  # two rounds for the first question, one each after
    for request in requests[2:]:
        roles = [m["role"] for m in request["messages"]]
        assert roles[:6] == ["system", "user", "assistant", "tool", "assistant", "user"]
        call_message, result, answer = request["messages"][2:5]
        assert call_message["content"] == ""
        assert call_message["tool_calls"][0]["function"]["name"] == "search_site"
        assert result["tool_call_id"] == call_message["tool_calls"][0]["id"]
        assert "Dice notation roller" in result["content"]
        assert answer["content"] == first_reply["content"]


async def test_a_restarted_worker_continues_from_saved_rounds(
    redis_server: Any, agent_url: str, chatlog: ChatLog, tool_settings: ToolSettings
) -> None:
    # A worker died after one tool round: its turns are in the chat's memory, no reply yet.
    message_id = await post(chatlog, "resume", "[[demo:tool=search_site]] site?")
    call = {
        "id": "call_before_crash",
        "type": "function",
        "function": {"name": "search_site", "arguments": '{"query": "site"}'},
    }
    content = wrap_tool_result("search_site", {"snippet": "found before the crash"})
    await chatlog.save_tool_turns(
        "resume",
        message_id,
        [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_before_crash", "content": content},
        ],
    )
    async with worker_with_tools(redis_server.url, agent_url, tool_settings):
        reply = await wait_reply(chatlog, "resume", message_id)
    (request,) = await agent_requests(agent_url)  # no tool was called again
    assert [m["role"] for m in request["messages"]] == ["system", "user", "assistant", "tool"]
    assert "found before the crash" in reply["content"]


async def test_scheduled_refresh_runs_through_arq(
    redis_server: Any, tmp_path: Path, chatlog: ChatLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # arq polls its queue every 5 s (ScheduledJobs.poll_delay): the job enqueued just after
    # the start waited for the next poll. The same poll, sooner.
    monkeypatch.setattr(ScheduledJobs, "poll_delay", 0.05)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><body><h1>Home</h1><p>Hello moss.</p></body></html>")
    content = tmp_path / "content"
    settings = fast_settings(redis_server.url, "http://127.0.0.1:9")
    jobs = ScheduledJobs(
        settings,
        ToolSettings(
            _env_file=None,
            content_dir=content,
            content_refresh_enabled=True,
            content_refresh_site_root=str(site),
        ),
    )
    await jobs.start()
    producer = jobs.create_redis()
    try:
        await producer.enqueue_job(JOB_NAME, _queue_name=jobs.queue_name)

        async def refreshed() -> bool:
            return (content / "index.txt").exists()

        await wait_until(refreshed, timeout=20, interval=0.2, message="the refreshed bundle")
    finally:
        await producer.aclose(close_connection_pool=True)
        await jobs.stop()
    assert "Hello moss." in (content / "index.txt").read_text()
    # arq's queue lives under the project's prefix; the chat keys are untouched
    assert await chatlog.redis.exists("terra:arq:health-check") == 0

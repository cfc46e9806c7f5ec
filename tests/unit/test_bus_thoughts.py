"""bus.thoughts: a reply's tool calls and reasoning read back from the event log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from bus import BusKeys, ChatLog
from bus.chatlog import ChatLimits
from bus.schemas import ReasoningProduced, ToolCallUpdated, encode
from bus.thoughts import MAX_REASONING_CHARS, read_thoughts

CHAT = "thoughts-chat"


@pytest.fixture
async def log() -> AsyncIterator[ChatLog]:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield ChatLog(redis, BusKeys("t"), ChatLimits(events_maxlen=10_000))
    await redis.aclose()


async def tool(log: ChatLog, reply_to: str, call: str, status: str, detail: str | None) -> None:
    event = ToolCallUpdated(
        chatId=CHAT, replyTo=reply_to, callId=call, name="search_site", status=status, detail=detail
    )
    await log.append_event(CHAT, encode(event))


async def reasoning(log: ChatLog, reply_to: str, text: str) -> None:
    await log.append_event(
        CHAT, encode(ReasoningProduced(chatId=CHAT, replyTo=reply_to, content=text))
    )


async def ask(log: ChatLog, text: str) -> str:
    return str((await log.accept_visitor_message(CHAT, text)).message["id"])


async def thoughts_of(
    log: ChatLog, first: str = "0-1", last: str = "+"
) -> dict[str, dict[str, Any]]:
    return await read_thoughts(log.redis, log.keys, CHAT, first, last)


async def test_each_reply_gets_its_own_tools_and_reasoning(log: ChatLog) -> None:
    first = await ask(log, "one")
    await tool(log, first, "c1", "started", None)
    await reasoning(log, first, "Let me ")
    await reasoning(log, first, "look.")
    await tool(log, first, "c1", "done", "0.2 s")
    await log.append_chunk(CHAT, first, "Found it.")
    reply, _ = await log.finish_reply(CHAT, first, "Found it.")
    second = await ask(log, "two")
    plain, _ = await log.finish_reply(CHAT, second, "Hello.")

    found = await thoughts_of(log)
    assert found == {
        reply["id"]: {
            "tools": [{"callId": "c1", "name": "search_site", "status": "done", "detail": "0.2 s"}],
            "reasoning": "Let me look.",
        }
    }
    assert plain["id"] not in found


async def test_a_stream_reset_drops_the_reasoning_shown_so_far(log: ChatLog) -> None:
    question = await ask(log, "q")
    await reasoning(log, question, "first attempt")
    await log.reset_stream(CHAT, question, "worker_lost")
    await reasoning(log, question, "second attempt")
    reply, _ = await log.finish_reply(CHAT, question, "A.")
    assert (await thoughts_of(log))[reply["id"]] == {"tools": [], "reasoning": "second attempt"}


async def test_a_page_starting_with_a_reply_keeps_its_tools(log: ChatLog) -> None:
    question = await ask(log, "q")
    await tool(log, question, "c1", "failed", "timed out")
    reply, _ = await log.finish_reply(CHAT, question, "Sorry.")
    # The page holds only the reply: its question (and the tool call) is on an older page.
    found = await thoughts_of(log, first=reply["eventId"], last=reply["eventId"])
    assert found[reply["id"]]["tools"] == [
        {"callId": "c1", "name": "search_site", "status": "failed", "detail": "timed out"}
    ]


async def test_long_reasoning_is_cut(log: ChatLog) -> None:
    question = await ask(log, "q")
    await reasoning(log, question, "x" * (MAX_REASONING_CHARS + 50))
    reply, _ = await log.finish_reply(CHAT, question, "A.")
    text = (await thoughts_of(log))[reply["id"]]["reasoning"]
    assert len(text) == MAX_REASONING_CHARS
    assert text.endswith("…")

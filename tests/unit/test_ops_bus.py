"""bus.ops on fakeredis: the key prefix is honoured and id prefixes resolve (real Redis:
tests/integration/test_ops_*.py)."""

from __future__ import annotations

import fakeredis
import pytest

from bus import BusKeys, ChatLog
from bus.ops import AmbiguousChat, OpsBus, UnknownChat
from bus.settings import BusSettings


@pytest.fixture
async def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis(decode_responses=True)


async def test_chats_and_prefixes_stay_within_the_key_prefix(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    settings = BusSettings(redis_url="redis://127.0.0.1:1/0", redis_key_prefix="acme")
    mine = ChatLog(redis, BusKeys("acme"), settings.limits)
    theirs = ChatLog(redis, BusKeys("terra"))
    await mine.accept_visitor_message("abc-1", "first")
    await mine.accept_visitor_message("abd-2", "second")
    await theirs.accept_visitor_message("abe-3", "another deployment's")
    bus = OpsBus(redis, settings)

    chats = await bus.chats()
    assert [(c.chat_id, c.messages, c.state) for c in chats] == [
        ("abd-2", 1, "queued"),
        ("abc-1", 1, "queued"),
    ]
    assert await bus.resolve_chat("abc") == "abc-1"
    assert await bus.resolve_chat("abc-1") == "abc-1"
    with pytest.raises(AmbiguousChat) as ambiguous:
        await bus.resolve_chat("ab")
    assert ambiguous.value.candidates == ["abc-1", "abd-2"]
    with pytest.raises(UnknownChat):
        await bus.resolve_chat("abe")
    with pytest.raises(UnknownChat):
        await bus.resolve_chat("a*")


async def test_conversation_picks_the_newest_visitor_message_or_a_prefix(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    log = ChatLog(redis, BusKeys())
    first = await log.accept_visitor_message("c1", "one")
    await log.finish_reply("c1", first.message["id"], "reply one")
    second = await log.accept_visitor_message("c1", "two")
    bus = OpsBus(redis, BusSettings(redis_url="redis://127.0.0.1:1/0"))

    newest = await bus.conversation("c1", None)
    assert newest.target.id == second.message["id"]
    assert [m.content for m in newest.messages] == ["one", "reply one", "two"]
    picked = await bus.conversation("c1", first.message["id"][:8])
    assert picked.target.content == "one"
    with pytest.raises(UnknownChat):
        await bus.conversation("c1", "nope")

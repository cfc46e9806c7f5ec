"""Fast unit tests of bus logic on fakeredis (Lua included). Real Redis: tests/integration."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import fakeredis
import pytest

from bus import BusKeys, ChatLog, compare_ids, is_valid_chat_id
from bus.chatlog import ChatLimits, is_stream_id
from bus.errors import ResumeGap, SchemaError
from bus.ratelimit import RateLimiter
from bus.schemas import MessagePosted, decode_event, decode_job, encode, render_frame


@pytest.fixture
async def log() -> AsyncIterator[ChatLog]:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield ChatLog(redis, BusKeys("t"), ChatLimits(events_maxlen=1000))
    await redis.aclose()


def test_keys_use_one_prefix_and_hash_tags() -> None:
    keys = BusKeys("pfx")
    assert keys.chat_events("abc") == "pfx:chat:{abc}:events"
    assert keys.chat_id_from_channel(keys.chat_channel("a-b_c")) == "a-b_c"
    assert keys.chat_id_from_channel("other:chat:{x}:live") is None
    assert keys.jobs_stream(0) == "pfx:jobs"
    with pytest.raises(ValueError, match="invalid chat id"):
        keys.chat_events("../etc")


@pytest.mark.parametrize(
    ("chat_id", "ok"),
    [
        ("abc", True),
        ("A_b-9", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("a/b", False),
        ("a b", False),
        ("é", False),
        ("a%2F", False),
    ],
)
def test_chat_id_validation(chat_id: str, ok: bool) -> None:
    assert is_valid_chat_id(chat_id) is ok


def test_stream_id_order_and_format() -> None:
    assert compare_ids("10-0", "9-5") > 0
    assert compare_ids("10-1", "10-10") < 0
    assert compare_ids("7-7", "7-7") == 0
    assert is_stream_id("1795254566356-0")
    assert not is_stream_id("abc")
    assert not is_stream_id("1-")


def test_render_frame_keeps_v1_shapes() -> None:
    msg = MessagePosted(id="m", chatId="c", sender="Visitor", content="hi", createdAt="t")
    frame = render_frame(encode(msg), "1-0")
    assert frame == {
        "id": "m",
        "chatId": "c",
        "sender": "Visitor",
        "content": "hi",
        "createdAt": "t",
        "eventId": "1-0",
    }
    chunk = render_frame(
        json.dumps(
            {
                "type": "assistantChunk",
                "v": 1,
                "chatId": "c",
                "content": "x",
                "done": False,
                "emittedAt": "t",
                "replyTo": None,
            }
        ),
        "2-0",
    )
    assert chunk == {
        "type": "assistantChunk",
        "chatId": "c",
        "content": "x",
        "done": False,
        "emittedAt": "t",
        "eventId": "2-0",
    }


def test_schema_errors_are_typed() -> None:
    with pytest.raises(SchemaError):
        decode_event('{"type": "nope"}')
    with pytest.raises(SchemaError):
        decode_job("not json")


async def test_accept_is_idempotent_and_enqueues_once(log: ChatLog) -> None:
    first = await log.accept_visitor_message("c", "hello", client_message_id="k1")
    again = await log.accept_visitor_message("c", "hello", client_message_id="k1")
    other = await log.accept_visitor_message("c", "hello")
    assert not first.duplicate
    assert again.duplicate
    assert again.message == first.message
    assert other.message["id"] != first.message["id"]
    waiting = int(await log.redis.get(log.keys.queue_waiting(0)) or 0)  # in the chat's lane
    assert await log.redis.xlen(log.keys.jobs_stream(0)) + waiting == 2
    assert (await log.worker_state("c"))["state"] == "queued"
    assert [m["id"] for m in await log.history("c")] == [first.message["id"], other.message["id"]]


async def test_finish_reply_writes_at_most_one_reply(log: ChatLog) -> None:
    msg = (await log.accept_visitor_message("c", "q")).message
    await log.append_chunk("c", msg["id"], "a")
    frame, dup = await log.finish_reply("c", msg["id"], "a")
    again, dup2 = await log.finish_reply("c", msg["id"], "something else")
    assert (dup, dup2) == (False, True)
    assert again["eventId"] == frame["eventId"]
    assert [m["sender"] for m in await log.history("c")] == ["Visitor", "Terra"]
    assert await log.reply_event_id("c", msg["id"]) == frame["eventId"]
    assert await log.unanswered_until("c", msg["id"]) == []


async def test_unanswered_and_oldest_unanswered_follow_reply_order(log: ChatLog) -> None:
    ids = [(await log.accept_visitor_message("c", f"q{i}")).message["id"] for i in range(3)]
    assert await log.oldest_unanswered("c") == ids[0]
    pending = await log.unanswered_until("c", ids[1])
    assert [m.id for _, m in pending] == ids[:2]
    await log.finish_reply("c", ids[0], "a0")
    assert await log.oldest_unanswered("c") == ids[1]


async def test_chunk_reports_cancel_request(log: ChatLog) -> None:
    msg = (await log.accept_visitor_message("c", "q")).message
    _, cancelled = await log.append_chunk("c", msg["id"], "a")
    assert not cancelled
    await log.request_cancel("c", msg["id"])
    _, cancelled = await log.append_chunk("c", msg["id"], "b")
    assert cancelled
    assert await log.cancel_requested("c", msg["id"])


async def test_events_after_and_resume_checks(log: ChatLog) -> None:
    msg = (await log.accept_visitor_message("c", "q")).message
    ids = [(await log.append_chunk("c", msg["id"], str(i)))[0] for i in range(3)]
    after = await log.events_after("c", msg["eventId"])
    assert [r.event_id for r in after][1:] == ids  # the queued state comes first
    await log.check_resume("c", msg["eventId"])
    await log.check_resume("c", "0-0")
    with pytest.raises(ResumeGap):
        await log.check_resume("gone", "1-0")
    with pytest.raises(ResumeGap):
        await log.check_resume("c", "99999999999999-0")  # newer than the log


async def test_every_append_refreshes_retention(log: ChatLog) -> None:
    await log.accept_visitor_message("c", "q")
    ttl = await log.redis.pttl(log.keys.chat_events("c"))
    assert 0 < ttl <= log.limits.retention_ms
    assert await log.redis.pttl(log.keys.chat_meta("c")) > 0


async def test_fixed_window_rate_limit() -> None:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    limiter = RateLimiter(redis)
    decisions = [await limiter.hit("k", 2, 60_000) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert 0 < decisions[-1].retry_after_ms <= 60_000
    assert RateLimiter.window(1000, 5500) == 5
    await redis.aclose()


async def test_unanswered_until_pages_back_to_the_last_answer(log: ChatLog) -> None:
    ids = [(await log.accept_visitor_message("p", f"q{i}")).message["id"] for i in range(7)]
    for answered in ids[:3]:
        await log.finish_reply("p", answered, "a")
    pending = await log.unanswered_until("p", ids[5], page=2)  # several pages
    assert [m.id for _, m in pending] == ids[3:6]
    assert await log.unanswered_until("p", ids[1], page=2) == []  # already answered
    assert await log.unanswered_until("p", "unknown", page=2) == []


async def test_a_refused_command_is_a_rejection_not_an_outage(log: ChatLog) -> None:
    """A NOPERM (ACL) on a chat write is configuration, not 'Redis unreachable': the worker
    must not wait and retry it as an outage."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoPermissionError

    from bus.errors import BusRejected, BusUnavailable

    async def refused(**_: object) -> None:
        raise NoPermissionError("NOPERM this user has no permissions to run the 'xadd' command")

    async def unreachable(**_: object) -> None:
        raise RedisConnectionError("Connection refused")

    log._accept = refused  # type: ignore[assignment]
    with pytest.raises(BusRejected):
        await log.accept_visitor_message("c", "hi")
    log._accept = unreachable  # type: ignore[assignment]
    with pytest.raises(BusUnavailable):
        await log.accept_visitor_message("c", "hi")

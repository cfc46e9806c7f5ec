"""An answer's OPEN and FINISH_CLOSE round trips on a real redis-server (issue 10), and the
worker's copy of a chat deciding what to answer as ``ChatLog.unanswered_until`` does."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bus import BusKeys, ChatAnswering, ChatLease, ChatLog, Delivery, JobClose, JobQueue
from bus.client import create_redis
from bus.schemas import decode_event, encode, render_frame
from tests.support.redis_server import RedisServer
from worker.chat_cache import ConversationCache, open_answer

KEYS = BusKeys()


async def _reply(log: ChatLog, chat: str, to: str, text: str = "ok") -> None:
    await log.finish_reply(chat, to, text)


async def test_open_reads_only_what_is_newer_than_the_copy(chat_log: ChatLog) -> None:
    answering = ChatAnswering(chat_log)
    first = await chat_log.accept_visitor_message("c", "one")
    first_id = str(first.message["id"])
    cold = await answering.open("c", first_id, known=None, known_has_message=False, window=8)
    assert cold.status == "open"
    assert cold.fresh
    assert [m.id for _, m in cold.entries] == [first_id]
    await _reply(chat_log, "c", first_id)
    second = await chat_log.accept_visitor_message("c", "two")
    second_id = str(second.message["id"])

    warm = await answering.open(
        "c", second_id, known=cold.entries[0][0], known_has_message=False, window=8
    )
    assert warm.status == "open"
    assert not warm.fresh
    assert [(m.sender, m.content) for _, m in warm.entries] == [("Visitor", "two"), ("Terra", "ok")]
    assert set(warm.memory) >= {first_id, second_id}  # the new reply's question, the new message

    state = await chat_log.worker_state("c")
    assert state["state"] == "processing"


async def test_a_copy_of_a_recreated_log_is_replaced(
    chat_log: ChatLog, redis_client: Redis
) -> None:
    answering = ChatAnswering(chat_log)
    old = await chat_log.accept_visitor_message("c", "before the loss")
    cold = await answering.open(
        "c", str(old.message["id"]), known=None, known_has_message=False, window=8
    )
    await redis_client.delete(KEYS.chat_messages("c"), KEYS.chat_events("c"), KEYS.chat_meta("c"))
    new = await chat_log.accept_visitor_message("c", "after")
    opening = await answering.open(
        "c", str(new.message["id"]), known=cold.entries[0][0], known_has_message=False, window=8
    )
    assert opening.fresh
    assert [m.content for _, m in opening.entries] == ["after"]


async def test_open_sets_nothing_for_an_answered_or_unknown_message(chat_log: ChatLog) -> None:
    answering = ChatAnswering(chat_log)
    accepted = await chat_log.accept_visitor_message("c", "hello")
    message_id = str(accepted.message["id"])
    await _reply(chat_log, "c", message_id)
    last = await chat_log.last_event_id("c")
    assert (
        await answering.open("c", message_id, known=None, known_has_message=False, window=8)
    ).status == "dup"
    unknown = await answering.open("c", "nope", known=None, known_has_message=False, window=8)
    assert unknown.status == "unknown"
    assert await chat_log.last_event_id("c") == last  # no state event either time


async def test_finish_close_acks_the_job_and_releases_only_its_own_lease(
    redis_server: RedisServer, chat_log: ChatLog
) -> None:
    redis = create_redis(redis_server.url, client_name="worker")
    try:
        jobs = JobQueue(redis, KEYS, consumer="w1")
        lease = ChatLease(redis, KEYS, owner="w1")
        answering = ChatAnswering(ChatLog(redis, KEYS))
        await jobs.ensure_group()
        accepted = await chat_log.accept_visitor_message("c", "hello")
        [delivery] = await jobs.take(1)
        assert await lease.acquire("c")
        close = JobClose(delivery.entry_id, delivery.partition, "w1")
        _, dup = await answering.finish_and_close(
            "c",
            str(accepted.message["id"]),
            "hi",
            status="complete",
            state="responded",
            detail=None,
            close=close,
        )
        assert not dup
        assert await jobs.owned() == []  # acked
        assert await redis.get(KEYS.chat_lease("c")) is None
        assert await chat_log.reply_event_id("c", str(accepted.message["id"])) is not None

        # Again (a retried call): nothing written, and another worker's lease stays.
        await redis.set(KEYS.chat_lease("c"), "w2")
        _, dup = await answering.finish_and_close(
            "c",
            str(accepted.message["id"]),
            "hi",
            status="complete",
            state="responded",
            detail=None,
            close=close,
        )
        assert dup
        assert await redis.get(KEYS.chat_lease("c")) == "w2"
    finally:
        await redis.aclose()


async def test_the_copy_answers_the_same_messages_as_the_log(chat_log: ChatLog) -> None:
    """Backlogs, answered and unanswered messages: the copy's pending list is the log's."""
    answering = ChatAnswering(chat_log)
    cache = ConversationCache(window=6)
    ids: list[str] = []
    decided = 0
    for round_ in range(5):
        for n in range(round_ % 3 + 1):
            accepted = await chat_log.accept_visitor_message("c", f"q{round_}.{n}")
            ids.append(str(accepted.message["id"]))
        target = ids[-1]
        expected = await chat_log.unanswered_until("c", target)
        opened = await open_answer(answering, cache, "c", target)
        assert opened is not None
        _, pending = opened
        if pending is not None:  # None: the copy cannot decide, the paging read does
            assert [m.id for _, m in pending] == [m.id for _, m in expected]
            decided += 1
        for _, message in expected[: max(1, len(expected) - 1)]:  # leave one unanswered
            await _reply(chat_log, "c", message.id)
    assert decided >= 4


async def test_open_takes_the_lease_unless_another_worker_holds_it(
    chat_log: ChatLog, redis_client: Redis
) -> None:
    lease = ChatLease(chat_log.redis, KEYS, owner="w1", ttl_ms=30_000)
    answering = ChatAnswering(chat_log, lease)
    accepted = await chat_log.accept_visitor_message("c", "hello")
    message_id = str(accepted.message["id"])
    await redis_client.set(KEYS.chat_lease("c"), "w2")
    last = await chat_log.last_event_id("c")

    busy = await answering.open(
        "c", message_id, known=None, known_has_message=False, window=8, lease=True
    )
    assert busy.status == "busy"
    assert await chat_log.last_event_id("c") == last  # no state set
    taken = await answering.open(
        "c",
        message_id,
        known=None,
        known_has_message=False,
        window=8,
        lease=True,
        departed=["w2"],
    )
    assert taken.status == "open"
    assert await redis_client.get(KEYS.chat_lease("c")) == "w1"

    await redis_client.delete(KEYS.chat_lease("c"))
    await _reply(chat_log, "c", message_id)
    dup = await answering.open(
        "c", message_id, known=None, known_has_message=False, window=8, lease=True
    )
    assert dup.status == "dup"
    assert await redis_client.get(KEYS.chat_lease("c")) is None  # a reply: no lease taken


async def test_answers_starting_on_a_fresh_redis_load_open_once(
    chat_log: ChatLog, redis_client: Redis
) -> None:
    """Issue 10: 100 jobs starting on a Redis without the script made 100 loads."""
    answering = ChatAnswering(chat_log)
    ids = []
    for n in range(20):
        accepted = await chat_log.accept_visitor_message(f"c{n}", "hello")
        ids.append(str(accepted.message["id"]))
    await redis_client.script_flush()
    await redis_client.config_resetstat()
    openings = await asyncio.gather(
        *(
            answering.open(f"c{n}", ids[n], known=None, known_has_message=False, window=8)
            for n in range(20)
        )
    )
    assert {o.status for o in openings} == {"open"}
    stats = await redis_client.info("commandstats")
    assert stats["cmdstat_script|load"]["calls"] == 1


async def test_a_message_known_only_to_a_stale_copy_sets_no_state(
    chat_log: ChatLog, redis_client: Redis
) -> None:
    """The log was lost and recreated: the worker's copy (and the message it holds) are
    gone, so nothing may be set ``processing`` for that message."""
    answering = ChatAnswering(chat_log)
    old = await chat_log.accept_visitor_message("c", "before the loss")
    old_id = str(old.message["id"])
    cold = await answering.open("c", old_id, known=None, known_has_message=False, window=8)
    await redis_client.delete(KEYS.chat_messages("c"), KEYS.chat_events("c"), KEYS.chat_meta("c"))
    await chat_log.accept_visitor_message("c", "after")
    last = await chat_log.last_event_id("c")
    opening = await answering.open(
        "c", old_id, known=cold.entries[0][0], known_has_message=True, window=8
    )
    assert opening.status == "unknown"
    assert await chat_log.last_event_id("c") == last


async def _job_taken(
    redis: Redis, chat_log: ChatLog
) -> tuple[ChatAnswering, str, Delivery, str | None]:
    """A worker's view of chat "c" with a visitor message whose job it took: its answering
    round trips, the message's id, the job, and the chat's last event id."""
    jobs = JobQueue(redis, KEYS, consumer="w1")
    await jobs.ensure_group()
    accepted = await chat_log.accept_visitor_message("c", "hello")
    [delivery] = await jobs.take(1)
    start = await chat_log.last_event_id("c")
    return ChatAnswering(ChatLog(redis, KEYS)), str(accepted.message["id"]), delivery, start


async def test_the_events_open_and_finish_close_store_are_the_schemas_own_json(
    redis_server: RedisServer, chat_log: ChatLog, redis_client: Redis
) -> None:
    """Issue 10 builds them with orjson: each stored event is byte for byte what its
    pydantic model encodes to (same fields, order and nulls), and the returned frame is the
    stored Message's frame."""
    redis = create_redis(redis_server.url, client_name="worker")
    try:
        answering, message_id, delivery, start = await _job_taken(redis, chat_log)
        await answering.open("c", message_id, known=None, known_has_message=False, window=8)
        frame, _ = await answering.finish_and_close(
            "c",
            message_id,
            'Hé "quoted"\n\u2028 ok',
            status="truncated",
            state="responded",
            detail="a detail",
            close=JobClose(delivery.entry_id, delivery.partition, "w1"),
        )
    finally:
        await redis.aclose()
    entries = await redis_client.xrange(KEYS.chat_events("c"), min=f"({start}")
    raws = [fields["d"] for _, fields in entries]
    assert [decode_event(raw).type for raw in raws] == [
        "workerState",
        "message",
        "assistantChunk",
        "workerState",
    ]
    for raw in raws:
        assert raw == encode(decode_event(raw))
    assert frame == render_frame(raws[1], entries[1][0])


async def test_finish_close_carries_the_last_chunk_just_before_the_message(
    redis_server: RedisServer, chat_log: ChatLog, redis_client: Redis
) -> None:
    """A reply complete before its text was written as a chunk: FINISH_CLOSE appends that
    chunk first, so readers get the same events in the same order as with a CHUNK call
    before it (chunk, Message, done chunk, state), live and from the log; a retried call
    (the reply exists) adds nothing."""
    redis = create_redis(redis_server.url, client_name="worker")
    listener = redis_client.pubsub()
    try:
        answering, message_id, delivery, start = await _job_taken(redis, chat_log)
        await listener.subscribe(KEYS.chat_channel("c"))
        close = JobClose(delivery.entry_id, delivery.partition, "w1")
        for _ in range(2):
            await answering.finish_and_close(
                "c",
                message_id,
                "hi there",
                status="complete",
                state="responded",
                detail=None,
                close=close,
                last_chunk="hi there",
            )
        live: list[str] = []
        async with asyncio.timeout(10):
            while len(live) < 4:  # None: the subscription's confirmation, or nothing yet
                got = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
                if got is not None:
                    live.append(got["data"])
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
    entries = await redis_client.xrange(KEYS.chat_events("c"), min=f"({start}")
    events = [decode_event(fields["d"]) for _, fields in entries]
    assert [(e.type, getattr(e, "content", None)) for e in events] == [
        ("assistantChunk", "hi there"),
        ("message", "hi there"),
        ("assistantChunk", ""),
        ("workerState", None),
    ]
    for raw in (fields["d"] for _, fields in entries):
        assert raw == encode(decode_event(raw))
    # published in the log's order, each frame naming its event and the one before it
    previous = start
    for (event_id, fields), published in zip(entries, live, strict=True):
        assert published == f"{previous} {event_id} {fields['d']}"
        previous = event_id
    assert await chat_log.streaming_reply("c") is None

"""Issue 10: the worker's hot path on a real redis-server: chunks of many chats in one
pipeline, one BEGIN round trip, history read once per answer."""

from __future__ import annotations

from redis.asyncio import Redis

from bus import ChatLog
from bus.schemas import decode_event


async def commandstats(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def test_chunks_of_many_chats_go_in_one_pipeline_and_keep_every_guarantee(
    chat_log: ChatLog, redis_client: Redis
) -> None:
    await redis_client.script_flush()  # as after a Redis restart: the script is not loaded
    await chat_log.request_cancel("c2", "m2")
    before = await commandstats(redis_client)
    items = [(f"c{i}", f"m{i}", f"text {i}") for i in range(5)]
    results = await chat_log.append_chunks(items)
    after = await commandstats(redis_client)
    assert [r[1] for r in results if isinstance(r, tuple)] == [False, False, True, False, False]
    assert after.get("script|load", 0) - before.get("script|load", 0) == 1  # loaded once
    assert after.get("script|exists", 0) == before.get("script|exists", 0)  # never asked
    # a second batch: the script is there, nothing fails, nothing is loaded
    again = await chat_log.append_chunks(items)
    final = await commandstats(redis_client)
    assert all(isinstance(r, tuple) for r in again)
    assert final.get("script|load", 0) == after.get("script|load", 0)
    for i in range(5):
        events = await chat_log.events_after(f"c{i}", "0-0")
        assert [e.fields["content"] for e in events] == [f"text {i}", f"text {i}"]
        assert decode_event(events[0].data).type == "assistantChunk"  # the schema holds
        assert await chat_log.streaming_reply(f"c{i}") == f"m{i}"
        assert events[0].event_id == results[i][0]  # type: ignore[index]


async def test_an_empty_batch_makes_no_round_trip(chat_log: ChatLog) -> None:
    assert await chat_log.append_chunks([]) == []


async def test_begin_reply_sets_processing_and_reports_chunks_and_stop_at_once(
    chat_log: ChatLog, redis_client: Redis
) -> None:
    accepted = await chat_log.accept_visitor_message("b1", "hello", client="x")
    mid = accepted.message["id"]
    assert await chat_log.begin_reply("b1", mid) == (False, False)
    assert (await chat_log.worker_state("b1"))["state"] == "processing"
    await chat_log.append_chunk("b1", mid, "par")
    await chat_log.request_cancel("b1", mid)
    before = await commandstats(redis_client)
    assert await chat_log.begin_reply("b1", mid) == (True, True)
    after = await commandstats(redis_client)
    # one round trip: the script, whose own reads are its only GET and HGETs
    assert after["evalsha"] - before["evalsha"] == 1
    assert after.get("get", 0) - before.get("get", 0) == 1
    assert after.get("hget", 0) - before.get("hget", 0) == 2


async def test_the_prompt_reuses_the_history_read_of_unanswered_until(
    chat_log: ChatLog, redis_client: Redis
) -> None:
    ids = [
        (await chat_log.accept_visitor_message("h1", f"q{i}", client="x")).message["id"]
        for i in range(3)
    ]
    pending = await chat_log.unanswered_until("h1", ids[-1])
    assert [m.id for _, m in pending] == ids
    before = await commandstats(redis_client)
    recent = await chat_log.messages_until("h1", "+", 64)
    assert [m.id for m in recent] == ids
    after = await commandstats(redis_client)
    assert after["xrevrange"] == before["xrevrange"]  # served from the same read
    await chat_log.finish_reply("h1", ids[0], "a0")
    recent = await chat_log.messages_until("h1", "+", 64)  # a new Message: read again
    assert [m.sender for m in recent] == ["Visitor", "Visitor", "Visitor", "Terra"]

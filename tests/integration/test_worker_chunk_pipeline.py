"""Issue 10: many chats' chunks in one pipeline, on a real redis-server."""

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

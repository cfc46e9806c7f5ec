"""Issue 10: one flusher writes every streaming reply's chunks, one batch per tick."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.support.wait import wait_until
from worker.chunks import ChunkWriter


class BatchLog:
    """An in-memory chat log with batches; records each round trip."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, str, str]]] = []
        self.cancel: set[str] = set()

    async def append_chunk(self, chat_id: str, reply_to: str, content: str) -> tuple[str, bool]:
        raise AssertionError("chunks must go in batches")

    async def append_chunks(
        self, items: Sequence[tuple[str, str, str]]
    ) -> list[tuple[str, bool] | Exception]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        return [(f"{len(self.batches)}-0", reply in self.cancel) for _, reply, _ in items]


async def test_many_chats_share_one_round_trip_per_tick() -> None:
    log = BatchLog()
    writers = [ChunkWriter(log, f"c{i}", f"m{i}", interval_seconds=0.05) for i in range(10)]
    for w in writers:
        w.push("a")  # every reply's first piece goes out at once
    await wait_until(lambda: sum(len(b) for b in log.batches) == 10)
    first_round = len(log.batches)
    for w in writers:
        w.push("b")
        w.push("c")
    await wait_until(lambda: sum(len(b) for b in log.batches) == 20)
    assert len(log.batches) == first_round + 1  # the second pieces of all ten: one batch
    for w in writers:
        await w.close()
    texts: dict[str, str] = {}
    for batch in log.batches:
        for chat, _, text in batch:
            texts[chat] = texts.get(chat, "") + text
    assert texts == {f"c{i}": "abc" for i in range(10)}
    assert all(w.chunks == 2 for w in writers)


async def test_close_writes_the_rest_at_once_and_a_cancel_is_reported() -> None:
    log = BatchLog()
    log.cancel.add("m1")
    writer = ChunkWriter(log, "c1", "m1", interval_seconds=10.0)  # a window close never waits
    assert writer.push("one")
    await wait_until(lambda: writer.chunks == 1)
    assert writer.cancelled
    assert not writer.push("two")
    await asyncio.wait_for(writer.close(), 1.0)
    assert "".join(t for b in log.batches for _, _, t in b) == "onetwo"


async def test_a_failed_batch_is_raised_by_the_next_push_and_by_close() -> None:
    class Broken(BatchLog):
        async def append_chunks(
            self, items: Sequence[tuple[str, str, str]]
        ) -> list[tuple[str, bool] | Exception]:
            raise ConnectionError("redis down")

    writer = ChunkWriter(Broken(), "c1", "m1", interval_seconds=0.01)
    writer.push("x")
    await wait_until(lambda: writer._error is not None)
    try:
        writer.push("y")
    except ConnectionError:
        pass
    else:
        raise AssertionError("the failed write was not raised")

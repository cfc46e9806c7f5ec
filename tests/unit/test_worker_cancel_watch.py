"""The stop watcher (worker.chunks.watch_cancel) polls the stop request only while the agent
is silent: every chunk write reports a stop, and under load a chat's writes can come
further apart than the poll interval while its deltas keep arriving (issue 10: those polls
were ~10 % of the worker's CPU with 100 chats streaming)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from worker.chunks import ChunkWriter, watch_cancel


class SlowLog:
    """A chat log whose chunk writes never finish (Redis far behind); counts the polls."""

    def __init__(self) -> None:
        self.polls = 0
        self.stop = False

    async def append_chunk(self, chat_id: str, reply_to: str, content: str) -> tuple[str, bool]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def append_chunks(
        self, items: Sequence[tuple[str, str, str]]
    ) -> list[tuple[str, bool] | Exception]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def cancel_requested(self, chat_id: str, message_id: str) -> bool:
        self.polls += 1
        return self.stop


class Ticks:
    """``asyncio.sleep`` for the watcher: each interval passes when the test says so."""

    def __init__(self) -> None:
        self.parked = asyncio.Event()
        self._go: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, _seconds: float) -> None:
        self.parked.set()
        await self._go.get()

    async def interval(self) -> None:
        """Let one interval pass and wait until the watcher is parked again (or done)."""
        self.parked.clear()
        self._go.put_nowait(None)
        await self.parked.wait()


async def test_no_poll_while_deltas_arrive_and_one_per_silent_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks = Ticks()
    monkeypatch.setattr(asyncio, "sleep", ticks.sleep)  # the watcher waits on Ticks
    log = SlowLog()
    writer = ChunkWriter(log, "c", "m", interval_seconds=0.035)
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    watcher = asyncio.create_task(watch_cancel(log, "c", "m", writer, answer, 200))  # type: ignore[arg-type]
    try:
        await ticks.parked.wait()
        for i in range(5):  # the agent streams; the writes (slow) report nothing yet
            writer.push(f"t{i} ")
            await ticks.interval()
        assert log.polls == 0

        await ticks.interval()  # the agent is silent for an interval: one poll
        assert log.polls == 1
        writer.push("more ")
        await ticks.interval()
        assert log.polls == 1

        log.stop = True  # the visitor asks to stop while the agent is silent
        ticks._go.put_nowait(None)
        await asyncio.wait_for(watcher, 10)
        assert writer.cancelled
        assert log.polls == 2
    finally:
        watcher.cancel()
        await writer.abort()
        await asyncio.gather(watcher, return_exceptions=True)

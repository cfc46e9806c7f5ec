"""Coalescing the model's ``reasoning_content`` into v=2 ``reasoning`` events.

Reasoning arrives token by token like content; :class:`ReasoningWriter` writes the first
delta at once and then batches, one ``ChatLog.append_event`` about every ``interval``
seconds, without ever making the stream reader wait on Redis (the same pattern as
:class:`worker.chunks.ChunkWriter`).

Reasoning is a courtesy for v=2 clients (their thinking drawer): a failed write is logged
and the rest of that reply's reasoning is dropped; it never fails the answer. ``<think>``
blocks inside the content are not reasoning events: they stay in the content, where the
original front end (and the widget) find them, so they are never shown twice.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import structlog
from redis.exceptions import RedisError

from bus.chatlog import ChatLog
from bus.errors import BusError
from bus.schemas import ReasoningProduced, encode
from worker.aio import cancel_and_wait, wait_event

__all__ = ["ReasoningWriter"]

logger = structlog.get_logger("worker.reasoning")


class ReasoningWriter:
    """Writes one reply's reasoning events (implements :class:`worker.llm.ReasoningSink`).

    Use as ``async with ReasoningWriter(...) as thoughts:``; leaving the block normally
    flushes what is buffered, leaving it cancelled drops it.
    """

    def __init__(
        self, chatlog: ChatLog, chat_id: str, reply_to: str, *, interval_seconds: float
    ) -> None:
        self.chatlog = chatlog
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.interval = interval_seconds
        self.events = 0
        self._buffer: list[str] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._failed = False
        self._task: asyncio.Task[None] | None = None

    def push_reasoning(self, text: str) -> None:
        """Queue ``text`` for writing (dropped after a failed write)."""
        if not text or self._failed:
            return
        self._buffer.append(text)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"reasoning:{self.chat_id}")
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_write = 0.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            delay = next_write - loop.time()
            if delay > 0:
                await wait_event(self._closing, delay)
            if self._buffer:
                text = "".join(self._buffer)
                self._buffer.clear()
                event = ReasoningProduced(chatId=self.chat_id, replyTo=self.reply_to, content=text)
                try:
                    await self.chatlog.append_event(self.chat_id, encode(event))
                except (BusError, RedisError) as exc:
                    logger.warning("worker.reasoning_dropped", error=type(exc).__name__)
                    self._failed = True
                    return
                self.events += 1
                next_write = loop.time() + self.interval
            if self._closing.is_set() and not self._buffer:
                return

    async def close(self) -> None:
        """Write what is still buffered and stop."""
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def abort(self) -> None:
        """Stop at once, dropping anything not yet written."""
        self._failed = True
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            await self.abort()
        else:
            await self.close()

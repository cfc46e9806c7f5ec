"""Coalescing content deltas into ``assistantChunk`` events.

A model emits a token every few milliseconds; writing each as its own event would cost a
Redis round trip and a frame per token. :class:`ChunkWriter` writes the first delta at
once (the visitor sees the reply start) and then batches: one background task appends
whatever accumulated about every ``interval`` seconds, one round trip per write
(``ChatLog.append_chunk``). The stream reader never waits on Redis, and text that arrives
before a pause in the stream is still written within one interval.

Guarantees: every pushed delta is written exactly once and in order, before
:meth:`ChunkWriter.close` returns, so the concatenated chunks of a reply equal its text.
``append_chunk`` reports a pending cancel request, after which :meth:`push` returns False.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from bus.chatlog import ChatLog
from worker.aio import cancel_and_wait, wait_event
from worker.metrics import WorkerMetrics

__all__ = ["ChunkWriter"]


class ChunkWriter:
    """Writes one reply's chunks (implements :class:`worker.llm.DeltaSink`).

    Use as ``async with ChunkWriter(...) as writer:``; leaving the block normally or with
    an ordinary exception flushes the rest, leaving it cancelled drops it.
    """

    def __init__(
        self,
        chatlog: ChatLog,
        chat_id: str,
        reply_to: str,
        *,
        interval_seconds: float,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.chatlog = chatlog
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.interval = interval_seconds
        self.metrics = metrics
        self.chunks = 0
        self.deltas = 0
        self.cancelled = False
        self._parts: list[str] = []
        self._buffer: list[str] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._aborted = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def text(self) -> str:
        """Everything pushed so far."""
        return "".join(self._parts)

    @property
    def emitted(self) -> bool:
        """True once any text was pushed."""
        return bool(self._parts)

    def push(self, text: str) -> bool:
        """Queue ``text`` for writing; False once the visitor asked to stop.

        Raises the write error (for example :class:`bus.BusUnavailable`) if a previous
        write failed, so a dead Redis stops the stream early.
        """
        if self._error is not None:
            raise self._error
        if text:
            self.deltas += 1
            self._parts.append(text)
            self._buffer.append(text)
            if self._task is None:
                self._task = asyncio.create_task(self._run(), name=f"chunks:{self.chat_id}")
            self._wake.set()
        return not self.cancelled

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_write = 0.0  # the first delta goes out at once
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._aborted:
                    return
                delay = next_write - loop.time()
                if delay > 0:
                    await wait_event(self._closing, delay)
                if self._buffer and not self._aborted:
                    text = "".join(self._buffer)
                    self._buffer.clear()
                    _, cancel = await self.chatlog.append_chunk(self.chat_id, self.reply_to, text)
                    next_write = loop.time() + self.interval
                    self.chunks += 1
                    if self.metrics is not None:
                        self.metrics.chunks.inc()
                    if cancel:
                        self.cancelled = True
                if self._closing.is_set() and not self._buffer:
                    return
        except Exception as exc:
            self._error = exc

    async def close(self) -> None:
        """Write what is still buffered and stop; re-raises a write error."""
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._error is not None:
            raise self._error

    async def abort(self) -> None:
        """Stop at once, dropping anything not yet written."""
        self._aborted = True
        self._wake.set()
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
        cancelled = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        if cancelled or (self._error is not None and exc is self._error):
            await self.abort()
        else:
            await self.close()

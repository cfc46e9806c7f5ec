"""Batching a token stream into periodic writes without making the reader wait.

A model emits a token every few milliseconds; writing each as its own event would cost a
Redis round trip and a frame per token. A :class:`Coalescer` writes the first piece at
once (the visitor sees something start) and then, from one background task, whatever
accumulated about every ``interval`` seconds. Subclasses say how a batch is written
(:meth:`Coalescer._write`).

Guarantees: pieces are written in order, each exactly once, and everything queued before
:meth:`Coalescer.close` is written before it returns (unless a write failed or the writer
was aborted). Use as ``async with``: leaving the block normally or with an ordinary
exception flushes the rest; leaving it cancelled, or because of the writer's own failed
write, drops it.
"""

from __future__ import annotations

import asyncio

from worker.aio import ClosingWriter, cancel_and_wait, wait_event

__all__ = ["Coalescer"]


class Coalescer(ClosingWriter):
    """Base of the periodic batch writers (:class:`~worker.chunks.ChunkWriter`, ...)."""

    def __init__(self, name: str, *, interval_seconds: float) -> None:
        self.name = name
        self.interval = interval_seconds
        self._buffer: list[str] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._stopped = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def _write(self, text: str) -> None:
        """Write one batch. An exception stops the writer and is kept in ``_error``."""
        raise NotImplementedError

    def _queue(self, text: str) -> None:
        """Add ``text`` to the next batch (starting the writer task on first use)."""
        if self._stopped:
            return
        self._buffer.append(text)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_write = 0.0  # the first piece goes out at once
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    return
                delay = next_write - loop.time()
                if delay > 0:
                    await wait_event(self._closing, delay)
                if self._buffer and not self._stopped:
                    text = "".join(self._buffer)
                    self._buffer.clear()
                    await self._write(text)
                    next_write = loop.time() + self.interval
                if self._stopped or (self._closing.is_set() and not self._buffer):
                    return
        except Exception as exc:
            self._error = exc

    async def close(self) -> None:
        """Write what is still buffered and stop; re-raises a failed write's error."""
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._error is not None:
            raise self._error

    async def abort(self) -> None:
        """Stop at once, dropping anything not yet written."""
        self._stopped = True
        self._wake.set()
        if self._task is not None:
            await cancel_and_wait([self._task])

"""Coalescing content deltas into ``assistantChunk`` events, every chat in one round trip.

A :class:`ChunkWriter` per reply collects its deltas; one :class:`ChunkFlusher` per chat
log (so one per worker) writes every writer's pending text in one pipeline per tick
(``append_chunks`` of :mod:`bus.chunk_pipeline`, each chat still its own CHUNK script
call), from one task that exists only while something streams. Issue 10: with 100 chats
streaming this is one round trip per tick instead of one per chat per tick.

Timing. The first piece of every reply, and what is left when a reply ends, are written at
once (latency first: the visitor sees the reply start); otherwise the flusher writes about
every ``interval``. When the worker falls behind (the tick comes late or the write takes
long), the window grows up to :data:`MAX_WINDOW_FACTOR` times ``interval``, so more tokens
go per write and every chat still gets a frame each window: no chat starves.

A reply that is complete before its last text was written (:meth:`ChunkWriter.end`; a
short reply often arrives whole in one read) leaves that text to the reply's FINISH, which
appends it as a chunk just before the Message (:meth:`ChunkWriter.take_last`): the same
events, one round trip fewer (issue 10).

Guarantees (as before): a reply's chunks are written in order, each piece exactly once, and
their concatenation equals its text; everything pushed before :meth:`ChunkWriter.close` is
written before it returns, unless a write failed (raised by the next :meth:`ChunkWriter.push`
and by ``close``) or the writer was aborted. ``append_chunk`` reports a pending cancel
request, after which :meth:`ChunkWriter.push` returns False. A ``before_first`` coroutine runs
before the reply's first chunk is written (a restarted answer's ``streamReset``,
:mod:`worker.patience`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import structlog

from bus import BusError
from worker.aio import ClosingWriter, cancel_and_wait, wait_event
from worker.metrics import WorkerMetrics
from worker.ports import ChunkLog, ToolLog

__all__ = [
    "MAX_WINDOW_FACTOR",
    "ChunkFlusher",
    "ChunkWriter",
    "until_done_or_stopped",
    "watch_cancel",
]

logger = structlog.get_logger("worker")

#: Under load the coalescing window grows up to this many times the configured interval.
MAX_WINDOW_FACTOR = 4.0


@runtime_checkable
class _BatchLog(Protocol):
    async def append_chunks(
        self, items: Sequence[tuple[str, str, str]]
    ) -> list[tuple[str, bool] | Exception]: ...


class ChunkFlusher:
    """Writes the pending text of every :class:`ChunkWriter` of one chat log, one batch per tick."""

    def __init__(self, chatlog: ChunkLog, *, interval_seconds: float) -> None:
        self.chatlog = chatlog
        self.interval = interval_seconds
        #: The current window (``interval`` while the worker keeps up).
        self.window = interval_seconds
        self._loop = asyncio.get_running_loop()
        self._writers: dict[ChunkWriter, None] = {}
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_at = 0.0

    _by_log: weakref.WeakKeyDictionary[object, ChunkFlusher] = weakref.WeakKeyDictionary()

    @classmethod
    def for_log(cls, chatlog: ChunkLog, interval_seconds: float) -> ChunkFlusher:
        """The flusher shared by every writer of ``chatlog`` on the running loop."""
        loop = asyncio.get_running_loop()
        try:
            flusher = cls._by_log.get(chatlog)
        except TypeError:  # not weak-referenceable: a flusher of its own
            return cls(chatlog, interval_seconds=interval_seconds)
        if flusher is None or flusher._loop is not loop:
            flusher = cls(chatlog, interval_seconds=interval_seconds)
            cls._by_log[chatlog] = flusher
        return flusher

    def add(self, writer: ChunkWriter, *, urgent: bool) -> None:
        """``writer`` has text to write (``urgent``: write it at once)."""
        self._writers[writer] = None
        if urgent:
            self._urgent.set()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name="chunks.flusher")

    def drop(self, writer: ChunkWriter) -> None:
        """Forget ``writer`` (aborted)."""
        self._writers.pop(writer, None)

    async def _run(self) -> None:
        loop = self._loop
        while self._writers:
            await self._wake.wait()
            self._wake.clear()
            delay = self._next_at - loop.time()
            if delay > 0:
                await wait_event(self._urgent, delay)
            self._urgent.clear()
            started = loop.time()
            late = max(0.0, started - self._next_at) if delay > 0 else 0.0
            await self._flush()
            took = loop.time() - started
            # Keeping up: the configured interval. Behind: a longer window (module doc).
            self.window = min(
                self.interval * MAX_WINDOW_FACTOR, max(self.interval, 2 * (late + took))
            )
            self._next_at = loop.time() + self.window
            if any(w._buffer for w in self._writers):
                self._wake.set()
        self._task = None

    async def _flush(self) -> None:
        batch: list[ChunkWriter] = []
        for writer in list(self._writers):
            if not writer._buffer or writer._ending:  # nothing, or the FINISH's to write
                self._writers.pop(writer, None)
                writer._idle.set()
                continue
            if not writer.chunks and writer.before_first is not None and not writer._began:
                writer._began = True
                try:
                    await writer.before_first()
                except Exception as exc:
                    writer._fail(exc)
                    self._writers.pop(writer, None)
                    continue
            batch.append(writer)
        if not batch:
            return
        texts = ["".join(w._buffer) for w in batch]
        for w in batch:
            w._buffer.clear()
        items = [(w.chat_id, w.reply_to, text) for w, text in zip(batch, texts, strict=True)]
        results: list[tuple[str, bool] | Exception]
        try:
            if isinstance(self.chatlog, _BatchLog):
                results = await self.chatlog.append_chunks(items)
            else:  # a chat log without batches (test doubles): one call per chat
                results = []
                for chat_id, reply_to, text in items:
                    results.append(await self.chatlog.append_chunk(chat_id, reply_to, text))
        except Exception as exc:
            results = [exc] * len(batch)
        for writer, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                writer._fail(result)
                self._writers.pop(writer, None)
                continue
            writer._written(result[1])
            if not writer._buffer:
                self._writers.pop(writer, None)
                writer._idle.set()


class ChunkWriter(ClosingWriter):
    """One reply's chunks, written by the shared flusher (a :class:`worker.ports.DeltaSink`).

    A failed write (for example :class:`bus.BusUnavailable`) is raised by the next
    :meth:`push` and by :meth:`close`, so a dead Redis stops the stream early.
    """

    def __init__(
        self,
        chatlog: ChunkLog,
        chat_id: str,
        reply_to: str,
        *,
        interval_seconds: float,
        metrics: WorkerMetrics | None = None,
        before_first: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.chatlog = chatlog
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.interval = interval_seconds
        self.metrics = metrics
        self.before_first = before_first
        self.chunks = 0
        self.deltas = 0
        self.cancelled = False
        #: When the last chunk was written (loop time): its write reported ``cancelled``.
        self.last_write_at = float("-inf")
        self._parts: list[str] = []
        self._buffer: list[str] = []
        self._error: BaseException | None = None
        self._stopped = False
        self._began = False
        #: The reply is complete (:meth:`end`): what is not written yet waits for the FINISH.
        self._ending = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._flusher: ChunkFlusher | None = None

    @property
    def text(self) -> str:
        """Everything pushed so far."""
        return "".join(self._parts)

    @property
    def emitted(self) -> bool:
        """True once any text was pushed."""
        return bool(self._parts)

    def push(self, text: str) -> bool:
        """Queue ``text`` for writing; False once the visitor asked to stop."""
        if self._error is not None:
            raise self._error
        if text and not self._stopped:
            self.deltas += 1
            first = not self._parts
            queued = bool(self._buffer)  # then the flusher already has this writer
            self._parts.append(text)
            self._buffer.append(text)
            if queued:
                return not self.cancelled
            self._idle.clear()
            if self._flusher is None:
                self._flusher = ChunkFlusher.for_log(self.chatlog, self.interval)
            self._flusher.add(self, urgent=first)
        return not self.cancelled

    def _written(self, cancel: bool) -> None:
        self.last_write_at = asyncio.get_running_loop().time()
        self.chunks += 1
        if self.metrics is not None:
            self.metrics.chunks.inc()
        if cancel:
            self.cancelled = True

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._stopped = True
        self._buffer.clear()
        self._idle.set()

    def end(self) -> None:
        """The reply is complete: text not written yet is left for :meth:`take_last` (the
        reply's FINISH writes it), instead of a chunk write of its own."""
        self._ending = True

    def take_last(self) -> str:
        """After :meth:`close`, the text left for the reply's FINISH ('' none)."""
        text = "".join(self._buffer)
        self._buffer.clear()
        if text:
            self.chunks += 1
            if self.metrics is not None:
                self.metrics.chunks.inc()
        return text

    async def close(self) -> None:
        """Write what is still buffered (at once) and return; re-raises a failed write's error.

        After :meth:`end` the buffered text stays for :meth:`take_last`; a restarted
        answer's ``before_first`` (its ``streamReset``) still runs before it.
        """
        if not self._idle.is_set() and self._flusher is not None and not self._stopped:
            self._flusher.add(self, urgent=True)  # also waits for a write in flight
            await self._idle.wait()
        if self._ending and self._buffer and not self._stopped and not self._began:
            self._began = True
            if self.before_first is not None:
                try:
                    await self.before_first()
                except Exception as exc:
                    self._fail(exc)
        self._stopped = True
        if self._error is not None:
            raise self._error

    async def abort(self) -> None:
        """Stop at once, dropping anything not yet written."""
        self._stopped = True
        self._buffer.clear()
        if self._flusher is not None:
            self._flusher.drop(self)
        self._idle.set()


async def watch_cancel(
    log: ToolLog,
    chat_id: str,
    message_id: str,
    writer: ChunkWriter,
    answer: asyncio.Future[Any],
    poll_ms: int,
    *,
    at_once: bool = False,
) -> None:
    """Return once the visitor asked to stop the reply (``writer.cancelled`` is then set).

    ``at_once``: the first check is now (the caller already waited one interval).
    """
    interval = poll_ms / 1000
    loop = asyncio.get_running_loop()
    deltas = writer.deltas
    while not answer.done():
        # The request was checked just before the reply started, and every chunk write
        # returns it: poll only after an interval without a chunk written, and without a
        # delta pushed either (issue 10: under load a chat's writes can come further apart
        # than the interval; its next write, already due, reports a stop as soon).
        if at_once:
            at_once = False
        else:
            await asyncio.sleep(interval)
        if writer.cancelled:
            return
        if answer.done() or loop.time() - writer.last_write_at < interval:
            continue
        if writer.deltas != deltas and not writer._stopped:
            deltas = writer.deltas
            continue
        try:
            if await log.cancel_requested(chat_id, message_id):
                writer.cancelled = True
                return
        except BusError as exc:  # the chunk writes report Redis trouble
            logger.debug("worker.cancel_check_failed", error=type(exc).__name__)
    await asyncio.Event().wait()  # the reply ended first: wait to be cancelled


async def until_done_or_stopped(
    log: ToolLog,
    chat_id: str,
    message_id: str,
    writer: ChunkWriter,
    answer: asyncio.Task[Any],
    poll_ms: int,
) -> None:
    """Return once ``answer`` is done or the visitor asked to stop it (:func:`watch_cancel`;
    ``answer`` may then still run). Cancelled, it cancels ``answer`` too."""
    watcher: asyncio.Task[None] | None = None
    try:
        # A reply done within one poll interval needs no watcher (issue 10: most short
        # exchanges); a longer one is watched from then on, first check at once.
        await asyncio.wait({answer}, timeout=poll_ms / 1000)
        if not answer.done():
            watcher = asyncio.create_task(
                watch_cancel(log, chat_id, message_id, writer, answer, poll_ms, at_once=True),
                name="worker.watch_cancel",
            )
            await asyncio.wait({answer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled ourselves (stop, lost lease)
        answer.cancel()
        if watcher is not None:
            watcher.cancel()
        await cancel_and_wait([answer] if watcher is None else [answer, watcher])
        raise
    if watcher is not None:
        await cancel_and_wait([watcher])

"""Coalescing content deltas into ``assistantChunk`` events.

:class:`ChunkWriter` writes the first delta at once and then about every ``interval``
seconds, one round trip per write (``append_chunk`` of the :class:`~worker.ports.ChunkLog`); see
:class:`worker.coalesce.Coalescer` for the batching guarantees. The concatenated chunks of
a reply equal its text. ``append_chunk`` reports a pending cancel request, after which
:meth:`ChunkWriter.push` returns False. A ``before_first`` coroutine runs before the first
chunk is written (a restarted answer's ``streamReset``, :mod:`worker.patience`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from worker.coalesce import Coalescer
from worker.metrics import WorkerMetrics
from worker.ports import ChunkLog

__all__ = ["ChunkWriter"]


class ChunkWriter(Coalescer):
    """Writes one reply's chunks (implements :class:`worker.ports.DeltaSink`).

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
        super().__init__(f"chunks:{chat_id}", interval_seconds=interval_seconds)
        self.chatlog = chatlog
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.metrics = metrics
        self.before_first = before_first
        self.chunks = 0
        self.deltas = 0
        self.cancelled = False
        self._parts: list[str] = []

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
        if text:
            self.deltas += 1
            self._parts.append(text)
            self._queue(text)
        return not self.cancelled

    async def _write(self, text: str) -> None:
        if not self.chunks and self.before_first is not None:
            await self.before_first()
        _, cancel = await self.chatlog.append_chunk(self.chat_id, self.reply_to, text)
        self.chunks += 1
        if self.metrics is not None:
            self.metrics.chunks.inc()
        if cancel:
            self.cancelled = True

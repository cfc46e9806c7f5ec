"""Coalescing the model's ``reasoning_content`` into v=2 ``reasoning`` events.

Reasoning arrives token by token like content; :class:`ReasoningWriter` writes the first
delta at once and then batches, one ``append_event`` about every ``interval``
seconds, without ever making the stream reader wait on Redis (the batching of
:class:`worker.coalesce.Coalescer`, shared with :class:`worker.chunks.ChunkWriter`).

Reasoning is a courtesy for v=2 clients (their thinking drawer): a failed write is logged
and the rest of that reply's reasoning is dropped; it never fails the answer. ``<think>``
blocks inside the content are not reasoning events: they stay in the content, where the
original front end (and the widget) find them, so they are never shown twice.
"""

from __future__ import annotations

import structlog

from bus import BusError
from bus.schemas import ReasoningProduced, encode
from worker.coalesce import Coalescer
from worker.ports import EventLog

__all__ = ["ReasoningWriter"]

logger = structlog.get_logger("worker.reasoning")


class ReasoningWriter(Coalescer):
    """Writes one reply's reasoning events (implements :class:`worker.ports.ReasoningSink`).

    Batching as :class:`worker.coalesce.Coalescer`; a failed write is logged and the rest
    of the reply's reasoning is dropped, never raised.
    """

    def __init__(
        self, chatlog: EventLog, chat_id: str, reply_to: str, *, interval_seconds: float
    ) -> None:
        super().__init__(f"reasoning:{chat_id}", interval_seconds=interval_seconds)
        self.chatlog = chatlog
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.events = 0

    def push_reasoning(self, text: str) -> None:
        """Queue ``text`` for writing (dropped after a failed write)."""
        if text:
            self._queue(text)

    async def _write(self, text: str) -> None:
        event = ReasoningProduced(chatId=self.chat_id, replyTo=self.reply_to, content=text)
        try:
            await self.chatlog.append_event(self.chat_id, encode(event))
        except BusError as exc:
            logger.warning("worker.reasoning_dropped", error=type(exc).__name__)
            self._stopped = True
            return
        self.events += 1

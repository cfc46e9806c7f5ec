"""Riding out agent outages while answering (issue 9): wait for an agent that cannot be
reached, and start an answer again when the agent was lost after part of it was shown.

- **Nothing shown yet.** While the agent cannot be reached (:func:`unreachable`: network,
  timeout, open breaker, or a 502/503/504 from a proxy in front of it), the chat shows
  ``queued`` with :data:`RECONNECTING_DETAIL` and the attempt is made again every
  :data:`PATIENCE_RETRY_SECONDS`.
- **Lost mid-stream.** When the agent goes away after text was shown (a broken, cut or
  silent stream, or an error the agent reports in the stream), the text shown stays on
  screen, the chat shows the same ``queued`` state, and the whole answer is started again
  once the agent answers, at most :data:`RESTARTS_AFTER_LOSS` times per kind of failure
  (an error reported in the stream says the agent is up: it is retried once, so one message
  that breaks the model never opens the breaker for other chats). The new attempt's first
  chunk is preceded by a ``streamReset`` (:class:`ReplyView`): v=2 clients drop the text
  shown; v1 clients get an empty done chunk, which clears the original front end's
  streaming bubble. The chunks after the reset are the whole stored reply.
- **One patience.** Both share ``AGENT_PATIENCE_SECONDS``, counted from the first failure;
  then the last error is raised and the visitor gets what is on screen (``ReplyView.visible``:
  no reset is written unless a new attempt showed text) plus the apology. A stop request
  while waiting ends the wait with :class:`StoppedWhileWaiting`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import structlog

from worker.chunks import ChunkWriter
from worker.errors import AgentError, ErrorCategory
from worker.metrics import WorkerMetrics
from worker.ports import AnswerLog
from worker.turns import AgentTurn

__all__ = [
    "PATIENCE_RETRY_SECONDS",
    "RECONNECTING_DETAIL",
    "RESTARTS_AFTER_LOSS",
    "ReplyView",
    "StoppedWhileWaiting",
    "ride_out",
    "unreachable",
]

logger = structlog.get_logger("worker")

#: What a visitor reads while the agent cannot be reached and the message waits.
RECONNECTING_DETAIL = "Terra is reconnecting to her model"
#: While waiting for the agent, try again this often (seconds).
PATIENCE_RETRY_SECONDS = 2.0
#: How often one answer is started again after the agent was lost mid-stream, by failure.
RESTARTS_AFTER_LOSS: dict[ErrorCategory, int] = {"network": 3, "timeout": 3, "server_error": 1}
#: Failures that say the agent cannot be reached (not "this request failed").
_UNREACHABLE: frozenset[ErrorCategory] = frozenset({"circuit_open", "network", "timeout"})
#: HTTP statuses of a proxy whose model server is down or restarting.
_PROXY_DOWN = frozenset({502, 503, 504})
#: The ``reason`` of the ``streamReset`` written before a restarted answer's first chunk.
RESET_REASON = "agent_lost"


def unreachable(err: AgentError) -> bool:
    """Whether ``err`` says the agent cannot be reached (the message waits for it)."""
    return err.category in _UNREACHABLE or err.status in _PROXY_DOWN


class StoppedWhileWaiting(Exception):
    """The visitor asked to stop a reply that was waiting for the agent."""


class ReplyView:
    """What the visitor is shown of one reply across its attempts, kept true in the log.

    Each attempt streams through its own :meth:`writer`; before a writer's first chunk,
    :meth:`before_chunks` writes the pending ``streamReset`` of an abandoned attempt and
    ends a shown wait (state back to ``processing``).
    """

    def __init__(
        self,
        log: AnswerLog,
        chat_id: str,
        reply_to: str,
        *,
        interval_seconds: float,
        metrics: WorkerMetrics,
    ) -> None:
        self.log = log
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.interval = interval_seconds
        self.metrics = metrics
        #: Text of an abandoned attempt still on screen (no reset written yet).
        self.shown = ""
        #: Content deltas of every attempt so far.
        self.deltas = 0
        self.reset_pending = False
        self.waiting = False
        self.current = self._new_writer()
        self._used = False

    def _new_writer(self) -> ChunkWriter:
        return ChunkWriter(
            self.log,
            self.chat_id,
            self.reply_to,
            interval_seconds=self.interval,
            metrics=self.metrics,
            before_first=self.before_chunks,
        )

    def writer(self) -> ChunkWriter:
        """A fresh writer for the next attempt (a closed writer writes nothing more)."""
        if self._used:
            self.current = self._new_writer()
        self._used = True
        return self.current

    @property
    def visible(self) -> str:
        """The reply's text as the visitor sees it now."""
        return self.current.text if self.current.emitted else self.shown

    def abandon(self) -> None:
        """The current attempt showed text and failed: its text stays until a new one shows."""
        self.shown = self.current.text
        self.reset_pending = True

    async def before_chunks(self) -> None:
        """Before an attempt's first chunk: drop the abandoned text, end the shown wait."""
        if self.reset_pending:
            await self.log.reset_stream(self.chat_id, self.reply_to, reason=RESET_REASON)
            self.reset_pending = False
            self.shown = ""
            self.metrics.stream_resets.inc()
            logger.info("worker.stream_reset", reply_to=self.reply_to, reason=RESET_REASON)
        await self.resumed()

    async def wait(self, err: AgentError) -> None:
        """Show that the message waits for the agent (once per wait)."""
        if not self.waiting:
            self.waiting = True
            logger.info("worker.agent_unreachable_waiting", category=err.category)
            await self.log.set_worker_state(self.chat_id, "queued", RECONNECTING_DETAIL)

    async def resumed(self) -> None:
        """The agent answers again: the chat is ``processing`` once more."""
        if self.waiting:
            self.waiting = False
            await self.log.set_worker_state(self.chat_id, "processing")


async def ride_out(
    attempt: Callable[[ChunkWriter, bool], Awaitable[AgentTurn]],
    view: ReplyView,
    *,
    patience_seconds: float,
) -> AgentTurn:
    """Run ``attempt(writer, restart)`` until it answers, through agent outages (module doc).

    ``restart`` is True for an attempt that starts an answer again after a loss. Raises the
    last :class:`AgentError` once it is not one to wait on or the patience ran out,
    :class:`StoppedWhileWaiting` on a stop request during a wait, anything else untouched.
    """
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    restarts: Counter[ErrorCategory] = Counter()
    restart = False
    while True:
        writer = view.writer()
        try:
            async with writer:
                turn = await attempt(writer, restart)
        except AgentError as err:
            view.deltas += writer.deltas
            if writer.emitted:
                if restarts[err.category] >= RESTARTS_AFTER_LOSS.get(err.category, 0):
                    raise
                restarts[err.category] += 1
                view.abandon()
                restart = True
                logger.info("worker.agent_lost_mid_stream", category=err.category)
            elif not unreachable(err):
                raise
            if deadline is None:
                deadline = loop.time() + patience_seconds
            left = deadline - loop.time()
            if left <= 0:
                raise
            if await view.log.cancel_requested(view.chat_id, view.reply_to):
                raise StoppedWhileWaiting from err
            await view.wait(err)
            await asyncio.sleep(min(err.retry_after or PATIENCE_RETRY_SECONDS, left))
            continue
        view.deltas += writer.deltas
        await view.resumed()
        return turn

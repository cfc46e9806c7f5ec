"""Answering one job: Terra's replies to a chat's waiting visitor messages.

:class:`AnswerHandler` knows nothing of job streams, slots or leases (that is
:mod:`worker.jobs`); it talks to the bus through the :class:`~worker.ports.AnswerLog` port
and to the model through the :class:`~worker.ports.Agent` port, so it is unit-tested on
in-memory fakes of both. Rules:

- **Oldest first.** A job answers every visitor message up to its own that has no reply
  yet (``unanswered_until``), in order, so order holds whichever worker gets which job.
- **Exactly one visible reply per message.** A message that already has a reply is never
  sent to the agent; ``finish_reply`` stores at most one reply per visitor message.
- **One visible answer per attempt.** A new attempt at a reply whose earlier attempt
  already streamed chunks first appends a ``streamReset``, so clients drop the partial text.
- **Stop.** A visitor's stop request is seen at the next chunk write, and by a watcher
  polling every ``CANCEL_POLL_MS`` while no chunk was written (the agent is silent); the
  agent call is then cancelled and the partial answer stored with ``status: "stopped"``.
- **Agent outages.** An agent that cannot be reached, before or after text was shown, is
  waited for up to ``AGENT_PATIENCE_SECONDS``, and an answer it broke off is started again
  once it is back (:mod:`worker.patience`).
- **Failures.** An agent failure (after its retries and that patience) stores the text on
  screen plus :data:`AGENT_APOLOGY` with status ``error``; any other surprise stores
  :data:`UNEXPECTED_APOLOGY`. A bus error is raised untouched: the job stays pending and is
  tried again, never answered with an apology for the bus's trouble.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import structlog
from openai.types.chat import ChatCompletionMessageParam

from bus import BusError, JobClose
from bus.schemas import MessagePosted, WorkerState
from worker.chat_cache import AnswerStart, Begun, ConversationCache, open_answer
from worker.chunks import ChunkWriter
from worker.conversation import (
    MessageTooLong,
    OverBudget,
    PromptRules,
    build_prompt,
    prompt_texts,
)
from worker.errors import AgentError
from worker.metrics import WorkerMetrics
from worker.patience import ReplyView, StoppedWhileWaiting, ride_out
from worker.ports import (
    Agent,
    AgentHealth,
    AnswerLog,
    AnswerOpener,
    ReplyStatus,
)
from worker.reasoning import ReasoningWriter
from worker.settings import WorkerSettings
from worker.tokenizer import ServerTokenizer
from worker.toolkit import ToolKit
from worker.toolloop import reply_until_stopped
from worker.turns import AgentTurn

__all__ = [
    "AGENT_APOLOGY",
    "UNEXPECTED_APOLOGY",
    "AnswerHandler",
    "AnswerInterrupted",
    "AnswerOutcome",
    "AnswerProgress",
]

logger = structlog.get_logger("worker")

#: The original worker's reply when the agent keeps failing.
AGENT_APOLOGY = "I had trouble talking to Terra's core service. Please try again shortly."
#: The original worker's reply when something else went wrong.
UNEXPECTED_APOLOGY = "Terra hit an unexpected issue. Please try again in a moment."
#: The prompt is first looked for among this many Messages per turn kept.
MESSAGES_PER_TURN = 4

#: How a job's answering ended (``gone``: its message is no longer in the log).
AnswerOutcome = Literal["answered", "stopped", "error", "duplicate", "gone"]


class AnswerInterrupted(Exception):
    """A stop was requested between two answers of one job; the job should stay pending."""


@dataclass(slots=True)
class AnswerProgress:
    """What a job's answering has done so far (read for its log line, even after a failure)."""

    tokens: int = 0
    answered: int = 0
    #: The last reply, acking the job and releasing its chat's lease, was sent (the lease
    #: is no longer renewed) / went through.
    closing: bool = False
    closed: bool = False


class AnswerHandler:
    """Answers jobs through the bus and agent ports; see the module doc."""

    def __init__(
        self,
        log: AnswerLog,
        agent: Agent,
        settings: WorkerSettings,
        *,
        system_prompt: str,
        tools: ToolKit | None = None,
        health: AgentHealth | None = None,
        metrics: WorkerMetrics | None = None,
        server_context: Callable[[], int | None] = lambda: None,
        tokenizer: ServerTokenizer | None = None,
        opener: AnswerOpener | None = None,
    ) -> None:
        self.log = log
        #: One round trip to open an answer and one to finish it and close its job (issue
        #: 10); without it (test doubles) the answer path reads and writes step by step.
        self.opener = opener
        self.cache = ConversationCache(settings.max_turns * MESSAGES_PER_TURN)
        self.agent = agent
        self.settings = settings
        self.system_prompt = system_prompt
        #: Terra's tools (the tool loop); without them the agent only chats.
        self.tools = tools
        self.health = health
        self.metrics = metrics or WorkerMetrics()
        #: The model's context length as its server states it (``/v1/models``), if it does.
        self.server_context = server_context
        key = settings.agent_api_key.get_secret_value() if settings.agent_api_key else None
        #: The server's tokenizer, asked only when the estimate says a prompt must be trimmed.
        self.tokenizer = tokenizer or ServerTokenizer(
            settings.agent_base_url, settings.agent_model, api_key=key
        )

    async def already_answered(self, chat_id: str, message_id: str) -> bool:
        """True when ``message_id`` has a stored reply."""
        return await self.log.reply_event_id(chat_id, message_id) is not None

    async def answer_job(
        self,
        chat_id: str,
        message_id: str,
        *,
        progress: AnswerProgress | None = None,
        stopping: Callable[[], bool] = lambda: False,
        close: JobClose | None = None,
        start: AnswerStart | None = None,
    ) -> AnswerOutcome:
        """Answer, oldest first, every unanswered visitor message up to ``message_id``.

        The outcome is that of the last answer, whose reply also acks ``close`` and releases
        the lease (with an opener; ``progress.closed``). Raises :class:`AnswerInterrupted`
        when ``stopping()`` turns true between two answers, and bus errors untouched.
        """
        progress = progress if progress is not None else AnswerProgress()
        begun: Begun | None = None
        pending: list[tuple[str, MessagePosted]] | None = None
        if start is not None and start.result is not None:  # opened with the lease
            begun, pending = start.result
        elif self.opener is not None:
            opened = await open_answer(self.opener, self.cache, chat_id, message_id)
            if opened is None:
                return "duplicate"
            begun, pending = opened
        if pending is None:
            pending = await self.log.unanswered_until(chat_id, message_id)
        if not pending:
            return "duplicate" if await self.already_answered(chat_id, message_id) else "gone"
        outcome: AnswerOutcome = "answered"
        for index, (event_id, message) in enumerate(pending):
            if index and stopping():
                raise AnswerInterrupted("stopping between answers")
            last = index == len(pending) - 1
            outcome = await self.answer(
                chat_id,
                event_id,
                message,
                progress,
                begun=begun if index == 0 else None,
                close=close if last and self.opener is not None else None,
            )
            progress.answered += 1
        return outcome

    async def apologise(self, chat_id: str, message_id: str, detail: str) -> None:
        """Store :data:`UNEXPECTED_APOLOGY` as the reply, unless one is stored already."""
        if not await self.already_answered(chat_id, message_id):
            await self._finish(chat_id, message_id, UNEXPECTED_APOLOGY, "error", detail)

    async def answer(
        self,
        chat_id: str,
        event_id: str,
        message: MessagePosted,
        progress: AnswerProgress,
        *,
        begun: Begun | None = None,
        close: JobClose | None = None,
    ) -> AnswerOutcome:
        """Answer one visitor message (at ``event_id``): stream the reply, then store it.

        ``begun``: the job's OPEN already set the state and read the conversation;
        ``close``: the reply acks the job and releases the lease (see :meth:`answer_job`).
        """

        async def finish(
            content: str, status: ReplyStatus, detail: str | None, last_chunk: str = ""
        ) -> None:
            await self._finish(
                chat_id, message.id, content, status, detail, close, progress, last_chunk
            )

        if begun is not None:
            streaming = begun.opening.streaming == message.id
            cancel = begun.opening.cancel == message.id
        else:
            streaming, cancel = await self.log.begin_reply(chat_id, message.id)
        if streaming:
            # An earlier attempt streamed part of this reply and never finished it.
            await self.log.reset_stream(chat_id, message.id, reason="retry")
            self.metrics.stream_resets.inc()
            logger.info("worker.stream_reset", reply_to=message.id)
        if cancel:
            await finish("", "stopped", "stopped")
            return "stopped"
        try:
            prompt = await self._conversation(chat_id, event_id, message, begun)
        except MessageTooLong as err:
            logger.info(
                "worker.message_too_long", needed=err.needed_tokens, budget=err.budget_tokens
            )
            await finish(err.sentence, "error", f"too_long: {err}")
            return "error"
        interval = self.settings.chunk_interval_ms / 1000
        view = ReplyView(
            self.log, chat_id, message.id, interval_seconds=interval, metrics=self.metrics
        )
        thoughts = ReasoningWriter(self.log, chat_id, message.id, interval_seconds=interval)
        tools = self.tools.session(self.log, chat_id, message.id) if self.tools else None

        async def attempt(writer: ChunkWriter, restart: bool) -> AgentTurn:
            nonlocal prompt
            if restart:  # the tool turns saved so far are part of the new prompt
                prompt = await self._conversation(chat_id, event_id, message)
            return await reply_until_stopped(
                self.agent,
                prompt,
                writer,
                self.log,
                chat_id,
                message.id,
                tools=tools,
                thoughts=thoughts,
                max_rounds=self.settings.max_tool_rounds,
                cancel_poll_ms=self.settings.cancel_poll_ms,
                # The FINISH can carry the reply's last chunk (worker.chunks, issue 10).
                end_writer=close is not None and self.opener is not None,
            )

        try:
            async with thoughts:
                turn = await ride_out(
                    attempt, view, patience_seconds=self.settings.agent_patience_seconds
                )
        except StoppedWhileWaiting:
            progress.tokens += view.deltas
            await finish(view.visible, "stopped", "stopped")
            return "stopped"
        except AgentError as err:
            progress.tokens += view.deltas
            if self.health is not None:
                self.health.record_failure(err)
            logger.warning("worker.agent_failed", category=err.category, error=err.message)
            partial = view.visible.rstrip()
            content = f"{partial}\n\n{AGENT_APOLOGY}" if partial else AGENT_APOLOGY
            await finish(content, "error", err.detail)
            return "error"
        except BusError:
            raise
        except Exception as exc:
            logger.exception("worker.answer_crashed")
            detail = f"unknown: {type(exc).__name__}"  # the detail reaches visitors
            await finish(UNEXPECTED_APOLOGY, "error", detail)
            return "error"
        progress.tokens += turn.deltas
        if self.health is not None:
            self.health.record_reply(turn.latency_ms)
        if turn.stopped:  # before a restarted attempt showed anything, the old text shows
            content = turn.content or view.visible
            await finish(content, "stopped", "stopped")
            return "stopped"
        last = view.current.take_last()
        if turn.finish_reason == "length":  # cut at max_tokens: an answer, marked as such
            await finish(turn.content, "truncated", "truncated", last)
            return "answered"
        await finish(turn.content, "complete", None, last)
        return "answered"

    async def _finish(
        self,
        chat_id: str,
        reply_to: str,
        content: str,
        status: ReplyStatus,
        detail: str | None,
        close: JobClose | None = None,
        progress: AnswerProgress | None = None,
        last_chunk: str = "",
    ) -> None:
        state: WorkerState = "error" if status == "error" else "responded"
        if close is not None and self.opener is not None:
            if progress is not None:
                progress.closing = True
            _, duplicate = await self.opener.finish_and_close(
                chat_id,
                reply_to,
                content,
                status=status,
                state=state,
                detail=detail,
                close=close,
                last_chunk=last_chunk,
            )
            if progress is not None:
                progress.closed = True
        else:
            _, duplicate = await self.log.finish_reply(
                chat_id, reply_to, content, status=status, state=state, detail=detail
            )
        if duplicate:
            logger.warning("worker.reply_already_stored", reply_to=reply_to)

    async def _conversation(
        self,
        chat_id: str,
        event_id: str,
        message: MessagePosted,
        begun: Begun | None = None,
    ) -> list[ChatCompletionMessageParam]:
        """The prompt for ``message``; replies written after it are found by ``replyTo``.

        ``begun``: from the job's OPEN, the worker's copy of the chat (no read at all).
        """
        max_turns = self.settings.max_turns
        recent, saved = begun.prompt_sources(message.id, max_turns) if begun else ([], None)
        if saved is None:
            for count in (max_turns * MESSAGES_PER_TURN, self.settings.messages_maxlen):
                recent = await self.log.messages_until(chat_id, "+", count)
                if any(m.id == message.id for m in recent):
                    break
            else:
                recent = await self.log.messages_until(chat_id, event_id, max_turns)
            asked = [m.id for m in recent if m.sender == "Visitor"]
            saved = await self.log.tool_turns(chat_id, asked)
        settings = self.settings
        rules = PromptRules.for_server(
            server_context_tokens=self.server_context(),
            setting_context_tokens=settings.agent_context_tokens,
            max_tokens=settings.agent_max_tokens,
            system_role=settings.agent_system_role,
            tool_turns=self.tools is not None and settings.max_tool_rounds > 1,
        )
        prompt = partial(
            build_prompt,
            recent,
            message,
            system_prompt=self.system_prompt,
            max_turns=max_turns,
            tool_turns=saved,
        )
        if self.tokenizer.available:
            try:  # by the estimate (which over-counts) nothing is left out: done
                return prompt(rules=rules, trim=False)
            except OverBudget:
                texts = prompt_texts(recent, self.system_prompt, saved)
                counts = await self.tokenizer.counts(texts)
                if counts:  # the estimate over-counts: the server's counts keep more history
                    rules = rules.with_counts(counts)
        return prompt(rules=rules)

"""The ports of the answer path: what answering needs from the bus and from the agent.

The answer handler (:mod:`worker.answer`), its writers and the tool loop are written
against these protocols only, so they run on in-memory fakes in unit tests and on the real
thing in production:

- the bus port :class:`AnswerLog` (with its parts :class:`ChunkLog`, :class:`EventLog`
  and :class:`ToolLog`): exactly the chat-log operations of one answer, satisfied by
  ``bus.WorkerBus.chats``; they raise only :class:`bus.BusError` subclasses;
- the agent port :class:`Agent`: one streamed completion with its retries, satisfied by
  :class:`worker.llm.AgentClient`; it raises :class:`worker.errors.AgentError`;
- the sinks of one answer (:class:`DeltaSink`, :class:`ReasoningSink`), the tools of one
  answer (:class:`ToolHost`) and what is learnt about the agent (:class:`AgentHealth`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, Protocol

from openai.types.chat import ChatCompletionMessageParam

from bus import JobClose, Opening
from bus.schemas import MessagePosted, WorkerState
from worker.errors import AgentError
from worker.turns import AgentTurn, ToolCall

__all__ = [
    "Agent",
    "AgentHealth",
    "AnswerLog",
    "AnswerOpener",
    "ChunkLog",
    "DeltaSink",
    "EventLog",
    "ReasoningSink",
    "ReplyStatus",
    "ToolHost",
    "ToolLog",
]

#: How a stored reply ended.
ReplyStatus = Literal["complete", "stopped", "error", "truncated"]


# --- the bus port ------------------------------------------------------------------------


class ChunkLog(Protocol):
    """Where a reply's chunks are written (:class:`worker.chunks.ChunkWriter`)."""

    async def append_chunk(self, chat_id: str, reply_to: str, content: str) -> tuple[str, bool]:
        """Append a chunk; returns ``(event_id, cancel_requested)``."""
        ...


class EventLog(Protocol):
    """Where other events of an answer go (reasoning, tool activity)."""

    async def append_event(self, chat_id: str, data: str) -> str:
        """Append an encoded event; returns its id."""
        ...


class ToolLog(EventLog, Protocol):
    """What one answer's tools read and write (:class:`worker.toolkit.ToolSession`)."""

    async def messages_until(self, chat_id: str, event_id: str, count: int) -> list[MessagePosted]:
        """Up to ``count`` Messages up to ``event_id`` (``"+"``: the newest), oldest first."""
        ...

    async def save_tool_turns(
        self, chat_id: str, message_id: str, turns: Sequence[Mapping[str, Any]]
    ) -> None:
        """Replace the tool turns saved for answering ``message_id``."""
        ...

    async def tool_turns(
        self, chat_id: str, message_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Saved tool turns of those visitor messages that have some."""
        ...

    async def cancel_requested(self, chat_id: str, message_id: str) -> bool:
        """True once the visitor asked to stop the reply to ``message_id``."""
        ...


class AnswerLog(ChunkLog, ToolLog, Protocol):
    """Every chat-log operation of answering one job (satisfied by ``WorkerBus.chats``)."""

    async def unanswered_until(
        self, chat_id: str, message_id: str
    ) -> list[tuple[str, MessagePosted]]:
        """Visitor messages up to ``message_id`` with no reply yet, oldest first."""
        ...

    async def reply_event_id(self, chat_id: str, message_id: str) -> str | None:
        """Event id of the stored reply to ``message_id``, if any."""
        ...

    async def set_worker_state(
        self, chat_id: str, state: WorkerState, detail: str | None = None
    ) -> str:
        """Record and broadcast the chat's worker state (``detail``: a visitor-facing note)."""
        ...

    async def streaming_reply(self, chat_id: str) -> str | None:
        """Visitor message id whose reply has chunks but no final Message yet."""
        ...

    async def begin_reply(self, chat_id: str, reply_to: str) -> tuple[bool, bool]:
        """Set ``processing`` (one round trip); ``(earlier chunks left, stop requested)``."""
        ...

    async def reset_stream(self, chat_id: str, reply_to: str, reason: str) -> str:
        """Append a ``streamReset`` for the reply to ``reply_to``."""
        ...

    async def tool_turns(
        self, chat_id: str, message_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Saved tool turns of those visitor messages that have some."""
        ...

    async def finish_reply(
        self,
        chat_id: str,
        reply_to: str,
        content: str,
        *,
        status: ReplyStatus,
        state: WorkerState,
        detail: str | None,
    ) -> tuple[dict[str, Any], bool]:
        """Store the reply (at most one per message); the flag says one existed already."""
        ...


class AnswerOpener(Protocol):
    """An answer's first and last round trips (``bus.ChatAnswering``; issue 10)."""

    async def open(
        self,
        chat_id: str,
        message_id: str,
        *,
        known: str | None,
        known_has_message: bool,
        window: int,
        memory_ids: tuple[str, ...] = (),
        lease: bool = False,
        departed: Collection[str] = (),
    ) -> Opening:
        """Check for a reply, take the lease, read what is newer than ``known``, set
        ``processing``."""
        ...

    async def finish_and_close(
        self,
        chat_id: str,
        reply_to: str,
        content: str,
        *,
        status: ReplyStatus,
        state: WorkerState,
        detail: str | None,
        close: JobClose,
        last_chunk: str = "",
    ) -> tuple[dict[str, Any], bool]:
        """``AnswerLog.finish_reply``, acking the job and releasing the chat's lease too;
        ``last_chunk``: reply text to append as a chunk just before the Message."""
        ...


# --- the sinks and tools of one answer ---------------------------------------------------


class DeltaSink(Protocol):
    """Where streamed content goes (:class:`worker.chunks.ChunkWriter`)."""

    def push(self, text: str) -> bool:
        """Take one content delta; return False to stop reading the stream (cancelled).

        May raise a :class:`bus.BusError`, which ends the answer untranslated.
        """
        ...

    @property
    def emitted(self) -> bool:
        """True once any text was pushed (the visitor may have seen it)."""
        ...


class ReasoningSink(Protocol):
    """Where ``reasoning_content`` deltas go (:class:`worker.reasoning.ReasoningWriter`)."""

    def push_reasoning(self, text: str) -> None:
        """Take one reasoning delta (buffered; never blocks, never raises)."""
        ...


class ToolHost(Protocol):
    """The tools side of one answer (:class:`worker.toolkit.ToolSession`)."""

    def definitions(self) -> list[dict[str, Any]]:
        """The request's ``tools`` list."""
        ...

    @property
    def call_names(self) -> Collection[str]:
        """Names (and aliases) a textual call may use; content mentioning them is held back."""
        ...

    def textual_calls(self, text: str, copied_from: Sequence[str] = ()) -> list[ToolCall]:
        """Calls of known tools written as text in ``text`` (empty when there are none).

        Tools named in ``copied_from`` (what the model read: visitor messages, tool
        results) are not called this way: the model may be echoing them.
        """
        ...

    async def run(self, calls: Sequence[ToolCall]) -> list[str]:
        """Run one round's calls; one ``tool`` message content per call, in order.

        Never raises for the model's mistakes (they become error results).
        """
        ...

    async def remember(self, turns: Sequence[dict[str, Any]]) -> None:
        """Persist the answer's tool turns so far (replacing what was saved before)."""
        ...

    async def cancelled(self) -> bool:
        """True once the visitor asked to stop this answer."""
        ...


# --- the agent port ----------------------------------------------------------------------


class Agent(Protocol):
    """The model behind Terra: one streamed completion (:class:`worker.llm.AgentClient`)."""

    async def complete(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        sink: DeltaSink,
        *,
        tools: list[dict[str, Any]] | None = None,
        thoughts: ReasoningSink | None = None,
        hold: Collection[str] = (),
    ) -> AgentTurn:
        """Stream one completion into ``sink``, retrying only while nothing was shown.

        With ``hold`` (tool names), content that may be a textual call of one of them is
        kept out of ``sink`` and returned as ``turn.held``. Raises :class:`AgentError`.
        """
        ...


class AgentHealth(Protocol):
    """What answers teach about the agent (:class:`worker.health.HealthMonitor`)."""

    def record_reply(self, latency_ms: float) -> None:
        """A reply succeeded."""
        ...

    def record_failure(self, error: AgentError) -> None:
        """A reply failed after its retries."""
        ...

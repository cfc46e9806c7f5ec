"""The worker's copy of each chat's recent Messages and tool memory (issue 10).

A chat's Messages never change once written, so the worker keeps the newest ``window`` of
them per chat and asks the bus only for what is newer (:meth:`bus.ChatAnswering.open`,
which checks the copy's newest entry is still in the log: a log trimmed past it, expired or
recreated sends the whole window again). Tool memory is kept only for visitor messages
that have a reply in the window: it is final then (the answer that wrote it has ended).

Which visitor messages a job answers is computed from the copy exactly as
``ChatLog.unanswered_until`` does from the log (oldest first, up to the job's message,
stopping at the first one with a reply), as long as the copy reaches back far enough to
decide; otherwise the caller falls back to the bus's paging read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bus import Opening
from bus.schemas import MessagePosted
from worker.ports import AnswerOpener

__all__ = [
    "CHATS_KEPT",
    "TEXT_KEPT",
    "AlreadyAnswered",
    "AnswerStart",
    "Begun",
    "ChatCopy",
    "ConversationCache",
    "LeaseBusy",
    "open_answer",
]

#: Chats whose copy is kept (least recently used dropped first).
CHATS_KEPT = 1024
#: Text the copies may hold in all (Messages' content and tool turns' content, in
#: characters); past it the least recently used copies are dropped.
TEXT_KEPT = 32 * 1024 * 1024

Entry = tuple[str, MessagePosted]


@dataclass(slots=True)
class ChatCopy:
    """One chat's newest Messages (oldest first) and the final tool memory among them."""

    entries: list[Entry] = field(default_factory=list)
    #: True when ``entries`` hold every Message the log has (fewer than the window).
    whole: bool = False
    #: Saved tool turns of answered visitor messages (None: none saved).
    memory: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)
    #: Ids of the Messages held.
    ids: set[str] = field(default_factory=set)
    #: Visitor message ids with a reply among the Messages held (and perhaps older ones).
    replied: set[str] = field(default_factory=set)
    #: Characters of text held (Messages and tool turns), for the cache's budget.
    size: int = 0

    @property
    def newest(self) -> str | None:
        """Entry id of the newest Message held."""
        return self.entries[-1][0] if self.entries else None

    def has(self, message_id: str) -> bool:
        """True when the Message ``message_id`` is held."""
        return message_id in self.ids

    def add(self, new: list[Entry], window: int) -> None:
        """Append ``new`` (oldest first), keeping the newest ``window`` Messages."""
        self.entries.extend(new)
        for _, m in new:
            self.ids.add(m.id)
            self.size += len(m.content)
            if m.sender == "Terra" and m.replyTo:
                self.replied.add(m.replyTo)
        if len(self.entries) > window:
            for _, m in self.entries[: len(self.entries) - window]:
                self.ids.discard(m.id)
                self.size -= len(m.content) + _text(self.memory.pop(m.id, None))
            del self.entries[: len(self.entries) - window]
            self.whole = False
            if len(self.replied) > 2 * window:  # questions long gone: count again
                self.replied = {
                    m.replyTo for _, m in self.entries if m.sender == "Terra" and m.replyTo
                }

    def unanswered_until(self, message_id: str) -> list[Entry] | None:
        """``ChatLog.unanswered_until`` from the copy; None when the copy cannot decide."""
        replied = self.replied
        found = False
        newest_first: list[Entry] = []
        for event_id, msg in reversed(self.entries):
            found = found or msg.id == message_id
            if not found or msg.sender != "Visitor":
                continue
            if msg.id in replied:
                return newest_first[::-1]
            newest_first.append((event_id, msg))
        return newest_first[::-1] if found and self.whole else None

    def tool_turns(
        self, asked: list[str], fresh: dict[str, list[dict[str, Any]] | None]
    ) -> dict[str, list[dict[str, Any]]] | None:
        """Saved tool turns of ``asked`` (``fresh``: just read), None if one is unknown."""
        found: dict[str, list[dict[str, Any]]] = {}
        for message_id in asked:
            if message_id in fresh:
                turns = fresh[message_id]
            elif message_id in self.memory:
                turns = self.memory[message_id]
            else:
                return None
            if turns:
                found[message_id] = turns
        return found


def _text(turns: list[dict[str, Any]] | None) -> int:
    """Characters of content in saved tool turns."""
    return sum(len(str(t.get("content") or "")) for t in turns or ())


class ConversationCache:
    """Per-chat copies, at most :data:`CHATS_KEPT` of them and :data:`TEXT_KEPT` characters
    of text in all (see the module doc)."""

    def __init__(self, window: int, chats: int = CHATS_KEPT, text: int = TEXT_KEPT) -> None:
        self.window = window
        self.chats = chats
        self.text = text
        self._copies: OrderedDict[str, ChatCopy] = OrderedDict()
        self._size = 0

    def get(self, chat_id: str) -> ChatCopy | None:
        """The chat's copy, if one is kept."""
        copy = self._copies.get(chat_id)
        if copy is not None:
            self._copies.move_to_end(chat_id)
        return copy

    @property
    def size(self) -> int:
        """Characters of text the copies hold."""
        return self._size

    def drop(self, chat_id: str) -> None:
        """Forget the chat's copy (its next answer reads the window again)."""
        copy = self._copies.pop(chat_id, None)
        if copy is not None:
            self._size -= copy.size

    def update(self, chat_id: str, opening: Opening) -> ChatCopy:
        """The chat's copy with what :meth:`bus.ChatAnswering.open` returned."""
        copy = self._copies.pop(chat_id, None)
        if copy is not None:
            self._size -= copy.size
        new = opening.entries[::-1]  # oldest first
        if copy is None or opening.fresh:
            copy = ChatCopy(whole=len(new) < self.window)
        copy.add(new, self.window)
        for message_id, turns in opening.memory.items():
            if message_id in copy.replied and message_id in copy.ids:
                copy.size += _text(turns) - _text(copy.memory.get(message_id))
                copy.memory[message_id] = turns
        self._copies[chat_id] = copy
        self._size += copy.size
        while len(self._copies) > 1 and (len(self._copies) > self.chats or self._size > self.text):
            _, dropped = self._copies.popitem(last=False)
            self._size -= dropped.size
        return copy


@dataclass(slots=True)
class Begun:
    """What a job's OPEN told its first answer: the chat's copy and what was just read."""

    copy: ChatCopy
    opening: Opening

    def prompt_sources(
        self, message_id: str, max_turns: int
    ) -> tuple[list[MessagePosted], dict[str, list[dict[str, Any]]] | None]:
        """The Messages and tool memory a prompt for ``message_id`` reads (None: unknown).

        Only the tail that a prompt of ``max_turns`` turns can use: from the oldest visitor
        question it may keep (two turns each, before ``message_id``) to the newest Message;
        the replies to those questions come after them.
        """
        if not self.copy.has(message_id):
            return [], None
        entries = self.copy.entries
        questions = (max_turns - 1) // 2 + 1  # those it may keep, and one more
        start = 0
        found = False
        for index in range(len(entries) - 1, -1, -1):
            m = entries[index][1]
            if not found:
                found = m.id == message_id
            elif m.sender == "Visitor":
                questions -= 1
                if questions == 0:
                    start = index
                    break
        recent = [m for _, m in entries[start:]]
        asked = [m.id for m in recent if m.sender == "Visitor"]
        return recent, self.copy.tool_turns(asked, self.opening.memory)


class AlreadyAnswered(Exception):
    """The job's message has a reply already (found by its OPEN): ack it, answer nothing."""


async def open_answer(
    opener: AnswerOpener,
    cache: ConversationCache,
    chat_id: str,
    message_id: str,
    *,
    lease: bool = False,
    departed: Sequence[str] = (),
) -> tuple[Begun | None, list[Entry] | None] | None:
    """The OPEN round trip of a job for ``message_id``, with the chat's copy.

    ``None`` when ``message_id`` has a reply; else what the first answer may use (None: it
    begins as usual, BEGIN and all) and the messages to answer (None: the caller reads them
    with the bus's paging read). With ``lease`` the chat's lease is taken too, and
    :class:`LeaseBusy` is raised when another worker holds it.
    """
    copy = cache.get(chat_id)
    waiting: tuple[str, ...] = ()
    if copy is not None:  # their tool memory may have changed: an earlier attempt's rounds
        replied = copy.replied
        for _, msg in reversed(copy.entries):
            if msg.sender == "Visitor":
                if msg.id in replied:
                    break
                waiting += (msg.id,)
    opening = await opener.open(
        chat_id,
        message_id,
        known=copy.newest if copy is not None else None,
        known_has_message=copy is not None and copy.has(message_id),
        window=cache.window,
        memory_ids=waiting,
        lease=lease,
        departed=departed,
    )
    if opening.status == "busy":
        raise LeaseBusy(chat_id)
    if opening.status == "dup":
        return None
    copy = cache.update(chat_id, opening)
    # OPEN found no reply to ``message_id`` in the chat's replies, the bus's truth: a reply
    # the copy saw may have been dropped since (an operator's requeue of a dead letter).
    copy.replied.discard(message_id)
    if opening.status != "open":
        return None, None  # not in the window: the paging read decides
    pending = copy.unanswered_until(message_id)
    if pending is None:
        return None, None  # the copy cannot decide (a long backlog): the paging read does
    return Begun(copy, opening), pending


class LeaseBusy(Exception):
    """Another worker holds the chat's lease (OPEN took nothing)."""


class AnswerStart:
    """A job's OPEN taking the chat's lease: the ``acquire`` of ``ChatHolds.hold``.

    Returns False while another worker holds the lease (the hold tries again), raises
    :class:`AlreadyAnswered` when the message has a reply, and keeps what OPEN read in
    :attr:`result` for the job's answers.
    """

    def __init__(
        self, opener: AnswerOpener, cache: ConversationCache, chat_id: str, message_id: str
    ) -> None:
        self.opener = opener
        self.cache = cache
        self.chat_id = chat_id
        self.message_id = message_id
        self.result: tuple[Begun | None, list[Entry] | None] | None = None

    async def __call__(self, departed: Sequence[str]) -> bool:
        try:
            opened = await open_answer(
                self.opener,
                self.cache,
                self.chat_id,
                self.message_id,
                lease=True,
                departed=departed,
            )
        except LeaseBusy:
            return False
        if opened is None:
            raise AlreadyAnswered(self.message_id)
        self.result = opened
        return True

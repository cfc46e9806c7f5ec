"""The tools as the worker uses them: one :class:`ToolKit` per process, one
:class:`ToolSession` per answer (the :class:`worker.ports.ToolHost` of the tool loop).

A session runs a round's calls concurrently through ``ToolRegistry.execute`` (per-call
timeouts; unknown tools, bad JSON and invalid arguments come back as error results, never
as exceptions), announces each call to v=2 clients as ``toolActivity`` events (tool name,
status and a short detail: never the arguments, which are visitor-derived), shortens huge
results for the model (:func:`fit_tool_result`) and saves the answer's tool turns in the
chat's memory (``save_tool_turns`` of the :class:`~worker.ports.ToolLog`).

Tool output kept per chat is bounded (issue 11: one 728-character message stored 105 KB for
7 days): a session counts the bytes of the ``tool`` results already saved for the chat's
visitor messages (those still in its Messages stream) and those it produces; past
``TOOL_OUTPUT_CHAT_MAX_BYTES`` a result is cut to what is left, and once nothing is left
it is only a short note (about 200 bytes), each telling the model (:data:`BUDGET_NOTE`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from bus.schemas import ToolCallStatus, ToolCallUpdated, encode
from tools.base import ChatLogEntry, JsonObject, ToolContext
from tools.prompt import build_system_prompt
from tools.registry import ToolRegistry, ToolResult, create_default_registry, wrap_tool_result
from tools.settings import ToolSettings
from worker.ports import ToolLog
from worker.settings import WorkerSettings
from worker.turns import ToolCall

__all__ = ["ToolKit", "ToolSession", "fit_tool_result"]

logger = structlog.get_logger("worker.tools")

#: Marks a string shortened for the model.
TRUNCATION_MARK = " … [truncated]"
#: Told to the model with a result cut, or dropped, by the chat's tool-output budget.
BUDGET_NOTE = (
    "This chat has used up its budget for tool output, so this result is cut short or "
    "missing. Answer from what you already have; do not call more tools."
)
#: Below this many bytes left, a result is replaced by the note alone.
_MIN_BUDGET_RESULT_BYTES = 400
#: Strings are never cut below this many characters while longer ones remain.
_MIN_KEPT_CHARS = 200
#: What a failed call's frame says, by the registry's error kind (bounded, no details).
FAILURE_DETAILS = {
    "timeout": "timed out",
    "invalid_input": "bad arguments",
    "unknown_tool": "unknown tool",
    "not_allowed": "not allowed",
    "limit_reached": "limit reached",
    "not_found": "nothing found",
    "unavailable": "unavailable",
    "too_many_calls": "skipped (too many calls)",
}
_FRAME_TEXT = re.compile(r"[^A-Za-z0-9_.:-]")
_FRAME_TEXT_MAX = 64


def _string_leaves(node: Any) -> list[tuple[Any, Any, str]]:
    """``(container, key, value)`` of every string inside ``node`` (dicts and lists)."""
    found: list[tuple[Any, Any, str]] = []
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        items: Any = current.items() if isinstance(current, dict) else enumerate(current)
        for key, value in items:
            if isinstance(value, str):
                found.append((current, key, value))
            elif isinstance(value, dict | list):
                stack.append(value)
    return found


def fit_tool_result(name: str, payload: JsonObject, limit: int) -> str:
    """The ``tool`` message content for ``payload``, at most about ``limit`` characters.

    Short results are wrapped unchanged (``<tool_result tool="NAME">``). Longer ones keep
    their JSON shape: the longest strings are cut first (each marked ``… [truncated]``)
    and ``"truncated": true`` is added, so the model knows it did not see everything. A
    payload made of very many short values falls back to a cut JSON text under
    ``partial_result``.
    """
    content = wrap_tool_result(name, payload)
    if len(content) <= limit:
        return content
    shrunk: JsonObject = copy.deepcopy(payload)
    shrunk["truncated"] = True
    for _ in range(256):
        content = wrap_tool_result(name, shrunk)
        excess = len(content) - limit
        if excess <= 0:
            return content
        leaves = sorted(_string_leaves(shrunk), key=lambda leaf: len(leaf[2]), reverse=True)
        if not leaves or len(leaves[0][2]) <= _MIN_KEPT_CHARS:
            break
        container, key, value = leaves[0]
        keep = max(_MIN_KEPT_CHARS, len(value) - excess - len(TRUNCATION_MARK))
        container[key] = value[:keep].rstrip() + TRUNCATION_MARK
    body = json.dumps(payload, ensure_ascii=False, default=str)
    room = limit
    while True:  # escaping makes the cut text longer: shrink until it fits
        content = wrap_tool_result(name, {"truncated": True, "partial_result": body[:room]})
        excess = len(content) - limit
        if excess <= 0 or room <= _MIN_KEPT_CHARS:
            return content
        room = max(_MIN_KEPT_CHARS, room - excess)


def _frame_text(value: str, fallback: str) -> str:
    """A model-chosen id or name made safe and short for a frame."""
    return _FRAME_TEXT.sub("", value)[:_FRAME_TEXT_MAX] or fallback


def _entry(created_at: str) -> datetime:
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ToolKit:
    """The registry, the system prompt generated from it, and one shared HTTP session.

    Share one per process. The session opens on first use and :meth:`aclose` closes it
    (a later call opens a new one).
    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        system_prompt: str,
        result_max_chars: int = 6000,
        max_calls_per_round: int = 8,
        history_limit: int = 1000,
        chat_output_max_bytes: int | None = None,
    ) -> None:
        self.registry = registry
        self.system_prompt = system_prompt
        self.result_max_chars = result_max_chars
        self.max_calls_per_round = max_calls_per_round
        #: Messages ``search_chat_logs`` reads (the chat's ``MESSAGES_MAXLEN``).
        self.history_limit = history_limit
        #: Bytes of tool results one chat may keep (None: unbounded).
        self.chat_output_max_bytes = chat_output_max_bytes
        self._definitions = registry.openai_tools()
        self._names = frozenset(registry.signatures())
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(
        cls,
        tool_settings: ToolSettings,
        settings: WorkerSettings,
        *,
        registry: ToolRegistry | None = None,
    ) -> ToolKit:
        """The production tool kit: the default registry and its generated prompt.

        Nothing is read or opened here.
        """
        registry = registry or create_default_registry(tool_settings)
        # The last of MAX_TOOL_ROUNDS model calls is offered no tools (worker.toolloop).
        prompt = build_system_prompt(
            registry, tool_settings, max_tool_iterations=max(0, settings.max_tool_rounds - 1)
        )
        return cls(
            registry,
            system_prompt=prompt,
            result_max_chars=settings.tool_result_max_chars,
            max_calls_per_round=settings.max_tool_calls_per_round,
            history_limit=settings.messages_maxlen,
            chat_output_max_bytes=tool_settings.tool_output_chat_max_bytes,
        )

    @property
    def definitions(self) -> list[dict[str, Any]]:
        """The ``tools`` list of a request."""
        return self._definitions

    @property
    def call_names(self) -> frozenset[str]:
        """Tool names and aliases."""
        return self._names

    def http(self) -> aiohttp.ClientSession:
        """The shared session (opened on first use, inside the running loop)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    def session(self, chatlog: ToolLog, chat_id: str, reply_to: str) -> ToolSession:
        """The tool host for answering the visitor message ``reply_to``."""
        return ToolSession(self, chatlog, chat_id, reply_to)


class ToolSession:
    """Tools for one answer (implements :class:`worker.ports.ToolHost`)."""

    def __init__(self, kit: ToolKit, chatlog: ToolLog, chat_id: str, reply_to: str) -> None:
        self.kit = kit
        self.chatlog = chatlog
        self.chat_id = chat_id
        self.reply_to = reply_to
        #: Bytes of tool output the chat keeps, counting this answer's (None: not read yet).
        self._spent: int | None = None

    def definitions(self) -> list[dict[str, Any]]:
        return self.kit.definitions

    @property
    def call_names(self) -> Collection[str]:
        return self.kit.call_names

    def textual_calls(self, text: str, copied_from: Sequence[str] = ()) -> list[ToolCall]:
        # The system prompt names every tool; where it rides in the first user turn (no
        # system role) it is not something the model could have been handed by a visitor.
        prompt = self.kit.system_prompt
        read = [part.replace(prompt, "") if prompt else part for part in copied_from]
        return [
            ToolCall(id=call.id, name=call.name, arguments=json.dumps(call.arguments))
            for call in self.kit.registry.parse_textual_calls(text, read)
        ]

    async def run(self, calls: Sequence[ToolCall]) -> list[str]:
        """Run the calls concurrently; calls beyond ``max_calls_per_round`` are refused.

        Raises what writing a frame raises (:class:`bus.BusUnavailable`), unwrapped.
        """
        limit = self.kit.max_calls_per_round
        context = ToolContext(
            chat_id=self.chat_id, http=self.kit.http(), read_history=self._read_history
        )
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._run_one(call, context, allowed=index < limit))
                    for index, call in enumerate(calls)
                ]
        except ExceptionGroup as errors:
            raise errors.exceptions[0] from None  # the caller handles Redis trouble as usual
        results = [task.result() for task in tasks]
        if self.kit.chat_output_max_bytes is None:
            return results
        if self._spent is None:
            self._spent = await self._saved_output_bytes()
        return [
            self._within_budget(call.name, result)
            for call, result in zip(calls, results, strict=True)
        ]

    def _within_budget(self, name: str, result: str) -> str:
        """``result``, cut or replaced when the chat's tool-output budget runs out."""
        budget, spent = self.kit.chat_output_max_bytes or 0, self._spent or 0
        size = len(result.encode())
        if spent + size > budget:
            left = budget - spent
            if left < _MIN_BUDGET_RESULT_BYTES:
                result = wrap_tool_result(name, {"error": BUDGET_NOTE})
            else:
                room = left - len(BUDGET_NOTE.encode()) - 100  # the wrapper and keys
                cut = result.encode()[: max(0, room)].decode("utf-8", errors="ignore")
                result = wrap_tool_result(name, {"note": BUDGET_NOTE, "partial_result": cut})
                while len(result.encode()) > left and cut:  # escaping grew it: shrink
                    cut = cut[: len(cut) - (len(result.encode()) - left) - 1]
                    result = wrap_tool_result(name, {"note": BUDGET_NOTE, "partial_result": cut})
            size = len(result.encode())
            logger.info("worker.tool_output_budget_reached", tool=name, kept_bytes=size)
        self._spent = spent + size
        return result

    async def _saved_output_bytes(self) -> int:
        """Bytes of ``tool`` results saved for the chat's visitor messages still in view."""
        messages = await self.chatlog.messages_until(self.chat_id, "+", self.kit.history_limit)
        asked = [m.id for m in messages if m.sender == "Visitor"]
        saved = await self.chatlog.tool_turns(self.chat_id, asked)
        return sum(
            len(str(turn.get("content") or "").encode())
            for turns in saved.values()
            for turn in turns
            if turn.get("role") == "tool"
        )

    async def _run_one(self, call: ToolCall, context: ToolContext, *, allowed: bool) -> str:
        registry = self.kit.registry
        known = registry.get(call.name)
        name = known.name if known is not None else _frame_text(call.name, "unknown")
        call_id = _frame_text(call.id, "call")
        await self._announce(call_id, name, "started")
        if allowed:
            result = await registry.execute(call.name, call.arguments, context)
        else:
            limit = self.kit.max_calls_per_round
            result = ToolResult(
                name=name,
                arguments={},
                payload={"error": f"Too many tool calls in one round; only {limit} were run."},
                error_kind="too_many_calls",
            )
        logger.info(
            "worker.tool_called",
            tool=name,
            ok=result.ok,
            error_kind=result.error_kind,
            duration_ms=round(result.duration_seconds * 1000, 1),
        )
        if result.ok:
            await self._announce(call_id, name, "done", f"{result.duration_seconds:.1f} s")
        else:
            detail = FAILURE_DETAILS.get(result.error_kind or "", "failed")
            await self._announce(call_id, name, "failed", detail)
        return fit_tool_result(result.name, result.payload, self.kit.result_max_chars)

    async def _announce(
        self, call_id: str, name: str, status: ToolCallStatus, detail: str | None = None
    ) -> None:
        event = ToolCallUpdated(
            chatId=self.chat_id,
            replyTo=self.reply_to,
            callId=call_id,
            name=name,
            status=status,
            detail=detail,
        )
        await self.chatlog.append_event(self.chat_id, encode(event))

    async def _read_history(self) -> Sequence[ChatLogEntry]:
        """The chat's Messages as ``search_chat_logs`` reads them, oldest first."""
        messages = await self.chatlog.messages_until(self.chat_id, "+", self.kit.history_limit)
        return [
            ChatLogEntry(timestamp=_entry(m.createdAt), sender=m.sender, message=m.content)
            for m in messages
        ]

    async def remember(self, turns: Sequence[dict[str, Any]]) -> None:
        await self.chatlog.save_tool_turns(self.chat_id, self.reply_to, turns)

    async def cancelled(self) -> bool:
        return await self.chatlog.cancel_requested(self.chat_id, self.reply_to)

"""search_chat_logs: search the current chat's earlier messages (terrarium-irc's modes)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, field_validator

from tools.base import ChatLogEntry, JsonObject, Tool, ToolContext, ToolParams

__all__ = ["SearchChatLogsParams", "create_search_chat_logs_tool", "match_messages"]

MAX_LOG_RESULTS = 10
_MESSAGE_CHARS = 500


class SearchChatLogsParams(ToolParams):
    query: str = Field(
        min_length=1,
        max_length=200,
        description='Words that must all appear; "a+b" for any of them; "\\"exact phrase\\"".',
    )
    sender: str | None = Field(
        None, description="Only messages from 'Visitor' or 'Terra'.", max_length=40
    )
    hours: int | None = Field(None, ge=1, le=24 * 30, description="Only the last N hours.")

    @field_validator("sender", mode="before")
    @classmethod
    def _blank_sender(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


def _predicate(query: str) -> tuple[str, list[str]]:
    text = query.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return "phrase", [text[1:-1].strip().lower()]
    if "+" in text:
        return "any", [t.strip().lower() for t in text.split("+") if t.strip()]
    return "all", [t.lower() for t in text.split()]


def match_messages(
    entries: Sequence[ChatLogEntry],
    query: str,
    *,
    sender: str | None = None,
    since: datetime | None = None,
    limit: int = MAX_LOG_RESULTS,
) -> list[ChatLogEntry]:
    """Messages matching ``query``, newest first.

    Modes: words (all must appear), ``a+b`` (any), ``"phrase"`` (exact, case-insensitive).
    Matching is substring-based, like SQL ``LIKE``.
    """
    mode, terms = _predicate(query)
    terms = [t for t in terms if t]
    if not terms:
        return []
    combine = any if mode == "any" else all
    found: list[ChatLogEntry] = []
    for entry in reversed(entries):
        if sender is not None and entry.sender.lower() != sender.lower():
            continue
        if since is not None and _aware(entry.timestamp) < since:
            continue
        text = entry.message.lower()
        if combine(term in text for term in terms):
            found.append(entry)
            if len(found) >= limit:
                break
    return found


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return _aware(moment).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def create_search_chat_logs_tool() -> Tool[SearchChatLogsParams]:
    async def handle(params: SearchChatLogsParams, ctx: ToolContext) -> JsonObject:
        since = datetime.now(UTC) - timedelta(hours=params.hours) if params.hours else None
        entries = await ctx.read_history()
        found = match_messages(entries, params.query, sender=params.sender, since=since)
        payload: JsonObject = {
            "result": (
                f"Found {len(found)} matching message(s)"
                if found
                else f"No messages found matching {params.query!r}"
            ),
            "count": len(found),
            "messages": [
                {
                    "timestamp": _iso(entry.timestamp),
                    "sender": entry.sender,
                    "message": entry.message[:_MESSAGE_CHARS],
                }
                for entry in found
            ],
            "query": params.query,
        }
        filters = {"sender": params.sender, "hours": params.hours}
        if any(value is not None for value in filters.values()):
            payload["filters"] = {k: v for k, v in filters.items() if v is not None}
        return payload

    return Tool(
        name="search_chat_logs",
        description=(
            "Search earlier messages of this chat (words: all must match; a+b: any; "
            '"phrase": exact). Use it when the visitor refers to something said before.'
        ),
        params=SearchChatLogsParams,
        handler=handle,
    )

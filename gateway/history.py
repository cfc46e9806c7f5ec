"""History pages bounded in bytes: the newest messages that fit, and where older ones start.

A chat keeps up to 200 messages of up to 4,000 characters; sent whole, one answer could
be megabytes, and a burst of them the gateway's memory. A page holds the newest
messages (before ``before``, if given) whose JSON fits ``HISTORY_MAX_BYTES``; when older
messages remain, ``X-Has-More: true`` and ``X-Next-Before: <eventId>`` say where the next
page starts (pass it as ``before``).

With ``thoughts``, Terra's Messages also carry ``thoughts: {tools, reasoning}``, what the
live v=2 frames showed while they were written (read back from the event log by the bus);
only clients that ask (``?v=2``) get the field, so the original front end's shape is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from bus import is_stream_id
from gateway.errors import json_error
from gateway.keys import AppKeys

__all__ = ["HistoryPage", "canonical_id", "dumps", "page_headers", "read_page"]

#: JSON as UTF-8 text: an emoji is 4 bytes, not a 12-byte surrogate-pair escape.
dumps = partial(json.dumps, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Messages oldest first, and whether older ones remain."""

    messages: list[dict[str, Any]]
    has_more: bool


def parse_before(value: str | None) -> str | None:
    """A validated ``before`` eventId (400 if malformed); ``None`` when absent."""
    if value is None or value == "":
        return None
    if not is_stream_id(value):
        raise json_error(400, "before must be an eventId")
    return canonical_id(value)


def canonical_id(event_id: str) -> str:
    """``00-07`` as Redis spells it, ``0-7`` (Redis compares ids, but refuses ``(00-00``)."""
    ms, _, seq = event_id.partition("-")
    return f"{int(ms)}-{int(seq)}"


async def read_page(
    request: web.Request, chat_id: str, limit: int, *, thoughts: bool = False
) -> HistoryPage:
    """The page of ``chat_id`` the request asks for (``?before=``), within the byte budget.

    ``thoughts``: add each Terra Message's tool calls and reasoning (counted in the budget).
    """
    settings = request.app[AppKeys.settings]
    bus = request.app[AppKeys.bus]
    before = parse_before(request.query.get("before"))
    fetched = await bus.history(chat_id, limit + 1, before=before)
    if thoughts and any(message.get("sender") == "Terra" for message in fetched):
        found = await bus.reply_thoughts(
            chat_id, str(fetched[0]["eventId"]), str(fetched[-1]["eventId"])
        )
        for message in fetched:
            if message.get("id") in found:
                message["thoughts"] = found[message["id"]]
    has_more = len(fetched) > limit
    newest_first = fetched[::-1][:limit]
    kept: list[dict[str, Any]] = []
    size = 2  # the array's brackets
    for message in newest_first:
        cost = len(dumps(message).encode()) + 2  # and a ", " separator
        if kept and size + cost > settings.history_max_bytes:
            has_more = True
            break
        kept.append(message)
        size += cost
    return HistoryPage(messages=kept[::-1], has_more=has_more)


def page_headers(page: HistoryPage) -> dict[str, str]:
    """``X-Has-More`` and, when true, ``X-Next-Before`` (the oldest returned eventId)."""
    if not page.has_more or not page.messages:
        return {"X-Has-More": "false"}
    return {"X-Has-More": "true", "X-Next-Before": str(page.messages[0]["eventId"])}

"""What Terra did while answering, read back from a chat's event log for its history.

Tool calls and reasoning travel live as v=2 frames (``toolActivity``, ``reasoning``) and are
kept only in the event log, not with the stored Message. So that a reloaded chat shows the
same "Show thoughts" drawer, a history page may carry them: the log is scanned over the
page's span, and each reply's frames are given to the Terra Message that ends them (the
next Message replying to the same visitor message, so an operator's requeue keeps each
attempt's own). A ``streamReset`` drops the reasoning shown so far, as a live client does.

Bounds: at most :data:`MAX_SCANNED` log entries per page (chunks included), reasoning cut
at :data:`MAX_REASONING_CHARS` per reply, at most :data:`MAX_TOOLS` calls per reply. Events
the log no longer holds (trimmed past ``EVENTS_MAXLEN`` or expired) are simply absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from bus.chatlog import compare_ids
from bus.keys import BusKeys

__all__ = ["MAX_REASONING_CHARS", "MAX_SCANNED", "MAX_TOOLS", "read_thoughts"]

MAX_SCANNED = 20_000
MAX_REASONING_CHARS = 8_000
MAX_TOOLS = 32
_BATCH = 1_000

#: One batch of the scan, filtered inside Redis so the bulk of a log (chunks) never
#: crosses the wire. Compact JSON escapes quotes inside strings, so ``"type":"x"`` can only
#: be an event's own type. Short batches keep each script call to about a millisecond.
#: KEYS: events. ARGV: start (inclusive, or "(id"), end, count.
#: -> {entries scanned, last id scanned or "", id1, data1, id2, data2, ...}
_SCAN = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
local out = {#entries, ''}
if #entries > 0 then out[2] = entries[#entries][1] end
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'd' then
      local d = fields[i + 1]
      if string.find(d, '"type":"toolActivity"', 1, true)
        or string.find(d, '"type":"reasoning"', 1, true)
        or string.find(d, '"type":"streamReset"', 1, true)
        or string.find(d, '"type":"message"', 1, true) then
        out[#out + 1] = entry[1]
        out[#out + 1] = d
      end
    end
  end
end
return out
"""


@dataclass
class _Reply:
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasoning: str = ""

    def wire(self) -> dict[str, Any] | None:
        if not self.tools and not self.reasoning:
            return None
        reasoning = self.reasoning
        if len(reasoning) > MAX_REASONING_CHARS:
            reasoning = reasoning[: MAX_REASONING_CHARS - 1] + "…"
        return {"tools": list(self.tools.values()), "reasoning": reasoning}


async def read_thoughts(
    redis: Redis, keys: BusKeys, chat_id: str, first: str, last: str
) -> dict[str, dict[str, Any]]:
    """Thoughts of the Terra Messages from event ``first`` to ``last`` (inclusive), by id.

    Each value is ``{tools: [{callId, name, status, detail?}], reasoning}``; Messages with
    neither are left out. The scan starts after the Message before ``first``, so a reply
    whose question is on an older page keeps its tool calls.
    """
    previous = await redis.xrevrange(keys.chat_messages(chat_id), max=f"({first}", count=1)
    cursor = f"({previous[0][0]}" if previous else "-"
    open_replies: dict[str, _Reply] = {}
    found: dict[str, dict[str, Any]] = {}
    scan = redis.register_script(_SCAN)
    scanned = 0
    while scanned < MAX_SCANNED:
        count = min(_BATCH, MAX_SCANNED - scanned)
        result = await scan(keys=[keys.chat_events(chat_id)], args=[cursor, last, count])
        seen, last_seen, kept = int(result[0]), str(result[1]), result[2:]
        for entry_id, raw in zip(kept[::2], kept[1::2], strict=True):
            _apply(str(raw), open_replies, found, compare_ids(str(entry_id), first) >= 0)
        scanned += seen
        if seen < count:
            break
        cursor = f"({last_seen}"
    return found


def _apply(
    raw: str, open_replies: dict[str, _Reply], found: dict[str, dict[str, Any]], in_page: bool
) -> None:
    try:
        event = json.loads(raw)
    except ValueError:
        return
    if not isinstance(event, dict) or not isinstance(event.get("replyTo"), str):
        return
    kind, reply_to = event.get("type"), event["replyTo"]
    if kind == "message":
        reply = open_replies.pop(reply_to, None)
        thoughts = reply.wire() if reply is not None else None
        if event.get("sender") == "Terra" and thoughts is not None and in_page:
            found[str(event.get("id"))] = thoughts
        return
    reply = open_replies.setdefault(reply_to, _Reply())
    if kind == "reasoning" and isinstance(event.get("content"), str):
        reply.reasoning += event["content"]
    elif kind == "streamReset":
        reply.reasoning = ""
    elif kind == "toolActivity" and isinstance(event.get("callId"), str):
        call: dict[str, Any] = {
            "callId": event["callId"],
            "name": str(event.get("name", "")),
            "status": str(event.get("status", "")),
        }
        if event.get("detail") is not None:
            call["detail"] = str(event["detail"])
        if call["callId"] in reply.tools or len(reply.tools) < MAX_TOOLS:
            reply.tools[call["callId"]] = call

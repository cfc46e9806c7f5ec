"""Bring-your-own-model chats in the chat log: the gateway streams the answer itself.

A BYO chat uses the same keys, events and frames as a Terra chat (history, resume, SSE,
transcript, stop and v1 frames work unchanged); what differs:

- no job is enqueued: the gateway that accepted the message streams the answer from the
  visitor's provider and writes it with the usual chunk and finish scripts;
- the chat's meta hash records ``mode`` (``byo``, or ``terra`` from Terra's accept script) in
  the script that stores the first message, so a chat is one or the other even when two
  first messages race; the other kind is refused (:class:`ChatModeConflict`);
- one answer at a time per chat: ``byo_active`` (the visitor message being answered) and
  ``byo_until`` (a lease in Unix ms, renewed while the answer streams). A gateway that dies
  without finishing leaves the lease to lapse; the next message then ends that answer as
  interrupted.

Nothing here ever sees the visitor's API key.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bus import scripts
from bus.chatlog import ChatLog, client_tag
from bus.client_bytes import ClientBytes
from bus.errors import (
    BusError,
    ChatModeConflict,
    QuotaExceeded,
    StorageFull,
    as_bus_error,
    translates_redis_errors,
)
from bus.schemas import (
    MessagePosted,
    WorkerState,
    WorkerStateChanged,
    encode,
    iso_now,
    render_frame,
)

__all__ = ["ByoAccepted", "ByoLog", "ChatModeConflict", "ReplyInProgress"]


class ReplyInProgress(BusError):
    """A BYO answer is still being streamed in this chat."""


#: The storage checks of Terra's accept script apply too: Redis's memory budget, the chat's
#: byte cap (the message, its state and ``reply bytes`` reserved for the answer) and the
#: client's bytes per day, charged to the same counter as Terra's messages.
#: The chat's mode is checked and set in this script, as Terra's accept script does
#: (meta ``mode``; a chat with messages and no mode is Terra's, from before the field).
#: KEYS: events, meta, messages, replies, memory, the client's bytes counter.
#: ARGV: channel, message, state, maxlen, msg_maxlen, ttl_ms, message id, now_ms, lease_ms,
#:       memory budget bytes (-1 off, 0 derived), budget fraction, chat bytes cap, reply bytes,
#:       client bytes per window, window ms
#: -> {'new', message event id, orphan message id or ''} | {'terra'} | {'busy', message id}
#:    | {'memory'} | {'chat_bytes'} | {'client_bytes', retry ms}
BYO_ACCEPT = (
    scripts._APPEND_FN
    + scripts._MEMORY_FN
    + """
local mode = redis.call('HGET', KEYS[2], 'mode')
if mode == 'terra' or (mode ~= 'byo' and redis.call('XLEN', KEYS[3]) > 0) then
  return {'terra'}
end
if over_budget(ARGV[10], ARGV[11]) then return {'memory'} end
local size = #ARGV[2] + #ARGV[3] + tonumber(ARGV[13])
if tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0') + size > tonumber(ARGV[12]) then
  return {'chat_bytes'}
end
local per_client = tonumber(ARGV[14]) >= 0  -- negative: the caller charged the client
if per_client and tonumber(redis.call('GET', KEYS[6]) or '0') + size > tonumber(ARGV[14]) then
  return {'client_bytes', redis.call('PTTL', KEYS[6])}
end
local orphan = ''
local active = redis.call('HGET', KEYS[2], 'byo_active')
if active and not redis.call('HGET', KEYS[4], active) then
  local lease = tonumber(redis.call('HGET', KEYS[2], 'byo_until') or '0')
  if tonumber(ARGV[8]) < lease then return {'busy', active} end
  orphan = active
end
redis.call('HSET', KEYS[2], 'mode', 'byo', 'byo_active', ARGV[7],
  'byo_until', tonumber(ARGV[8]) + tonumber(ARGV[9]))
redis.call('HINCRBY', KEYS[2], 'bytes', size)
if per_client and redis.call('INCRBY', KEYS[6], size) == size then
  redis.call('PEXPIRE', KEYS[6], ARGV[15])
end
local mid = append(ARGV[1], ARGV[2], 'message', ARGV[4], ARGV[5])
append(ARGV[1], ARGV[3], 'state', ARGV[4], ARGV[5])
refresh(ARGV[6])
return {'new', mid, orphan}
"""
)

#: KEYS: meta. ARGV: message id, until_ms -> 1 while ``message id`` holds the lease, else 0
BYO_RENEW = """
if redis.call('HGET', KEYS[1], 'byo_active') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'byo_until', ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class ByoAccepted:
    """A stored BYO visitor message, and an earlier answer left unfinished (if any)."""

    message: dict[str, Any]
    orphan: str | None


@translates_redis_errors
class ByoLog:
    """Writes of BYO chats, on top of the chat log's scripts."""

    def __init__(self, redis: Redis, log: ChatLog) -> None:
        self._redis = redis
        self._log = log
        self._keys = log.keys
        cluster = self._keys.cluster
        self._accept = redis.register_script(scripts.for_layout(BYO_ACCEPT, cluster))
        self._renew = redis.register_script(BYO_RENEW)
        self._client_bytes = ClientBytes(redis, self._keys)

    def _lane(self, chat_id: str, tag: str) -> str:
        """The client's lane in the chat's partition (its bytes counter sits beside it)."""
        return self._keys.queue_lane(self._keys.partition_of(chat_id), tag)

    async def accept(
        self,
        chat_id: str,
        content: str,
        *,
        provider: str,
        model: str,
        lease_ms: int,
        client: str | None = None,
    ) -> ByoAccepted:
        """Store a BYO visitor message and set the chat ``processing``, in one script.

        Raises :class:`ChatModeConflict` when the chat is Terra's, :class:`ReplyInProgress`
        while another answer of this chat streams, and, as Terra's accept does,
        :class:`StorageFull` and :class:`QuotaExceeded` ("chat", or "client" past
        ``client``'s bytes per day, counted with its Terra messages).
        """
        lim = self._log.limits
        tag = client_tag(self._keys.prefix, client) if client else f"chat-{chat_id}"
        message = MessagePosted(
            id=str(uuid.uuid4()),
            chatId=chat_id,
            sender="Visitor",
            content=content,
            createdAt=iso_now(),
            provider=provider,
            model=model,
        )
        state = WorkerStateChanged(
            chatId=chat_id, state="processing", detail=f"byo: {provider}", updatedAt=iso_now()
        )
        data = (encode(message), encode(state))
        # Partitioned, the client's bytes are charged apart (bus.client_bytes): ``charge``.
        charge = None
        if client and self._keys.partitioned:
            charge = sum(len(d.encode()) for d in data) + lim.reply_bytes_reserved
        try:
            if charge is not None:
                retry_ms = await self._client_bytes.reserve(
                    tag, charge, lim.client_bytes_per_window, lim.client_bytes_window_ms
                )
                if retry_ms is not None:
                    raise QuotaExceeded("client", retry_ms)
            result = await self._accept(
                keys=[*self._log.chat_keys(chat_id)[:5], f"{self._lane(chat_id, tag)}:bytes"],
                args=[
                    self._keys.chat_channel(chat_id),
                    data[0],
                    data[1],
                    lim.events_maxlen,
                    lim.messages_maxlen,
                    lim.retention_ms,
                    message.id,
                    int(time.time() * 1000),
                    lease_ms,
                    lim.memory_budget_bytes,
                    lim.memory_budget_fraction,
                    lim.chat_max_bytes,
                    lim.reply_bytes_reserved,
                    -1 if charge is not None else lim.client_bytes_per_window if client else 2**62,
                    lim.client_bytes_window_ms,
                ],
            )
        except RedisError as exc:
            raise as_bus_error(exc) from exc
        if charge is not None and result[0] != "new":  # nothing stored: give the bytes back
            await self._client_bytes.refund(tag, charge)
        if result[0] == "terra":
            raise ChatModeConflict("terra")
        if result[0] == "busy":
            raise ReplyInProgress("an answer is still being written in this chat")
        if result[0] == "memory":
            raise StorageFull("Redis is above its memory budget for new messages")
        if result[0] == "chat_bytes":
            raise QuotaExceeded("chat")
        if result[0] == "client_bytes":
            raise QuotaExceeded("client", max(0, int(result[1])))
        return ByoAccepted(
            message=render_frame(data[0], str(result[1])),
            orphan=str(result[2]) or None,
        )

    async def renew(self, chat_id: str, message_id: str, lease_ms: int) -> bool:
        """Extend the answer's lease; False once another message took the chat over."""
        until = int(time.time() * 1000) + lease_ms
        try:
            held = await self._renew(keys=[self._keys.chat_meta(chat_id)], args=[message_id, until])
        except RedisError as exc:
            raise as_bus_error(exc) from exc
        return bool(int(held))

    async def mode(self, chat_id: str) -> Literal["terra", "byo"] | None:
        """``byo`` for a BYO chat, ``terra`` for a chat with Terra's messages, else ``None``."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._keys.chat_meta(chat_id), "mode")
            pipe.exists(self._keys.chat_messages(chat_id))
            mode, has_messages = await pipe.execute()
        if mode == "byo":
            return "byo"
        return "terra" if mode == "terra" or has_messages else None

    async def finish(
        self,
        chat_id: str,
        reply_to: str,
        content: str,
        *,
        provider: str,
        model: str,
        status: Literal["complete", "stopped", "error", "truncated"] = "complete",
        state: WorkerState = "responded",
        detail: str | None = None,
    ) -> dict[str, Any]:
        """Store the answer to ``reply_to`` (at most one), end its stream, set the state."""
        frame, _ = await self._log.finish_reply(
            chat_id,
            reply_to,
            content,
            status=status,
            state=state,
            detail=detail,
            provider=provider,
            model=model,
        )
        return frame

"""One answer in two round trips: OPEN before the model is asked, FINISH_CLOSE after.

Issue 10. Before, a short exchange cost the worker about ten round trips after the job read
(the reply check, the unanswered range, the history, the tool memory, the state, the
finish, the ack, the lease release), and the history was read and parsed again for every
job. Now:

- :data:`OPEN` checks the visitor message has no reply, reads the chat's Messages newer
  than the worker's copy (``known``: the newest Message it holds; the copy is valid while
  that entry is still in the log, else the newest ``window`` come back), the tool memory
  the prompt needs, and, when the message is in that window, sets the chat ``processing``
  and reports an earlier attempt's chunks and a stop request (as :data:`bus.scripts.BEGIN`).
- :data:`FINISH_CLOSE` is :data:`bus.scripts.FINISH` (the Message, the done chunk, the
  state, the reply mapping) plus the job's ack (and the trim of finished jobs) and the
  release of the chat's lease, in the same script: a reply is never stored with its job
  left pending, and the job's stream key is passed in KEYS, so on the partitioned layout
  it is one slot with the chat's keys. It may carry the reply's last chunk too (text the
  worker had not written yet when the reply was complete), appended just before the
  Message: the same events in the same order, and a short reply's chunk costs no round
  trip of its own.

Both run on the chat's keys only (plus its lease and its partition's jobs stream), so they
keep every guarantee of the scripts they replace.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from redis.exceptions import RedisError

from bus import scripts
from bus.chatlog import ChatLog
from bus.chunk_pipeline import chunk_json
from bus.errors import as_bus_error, translates_redis_errors
from bus.lease import ChatLease
from bus.schemas import (
    MessagePosted,
    WorkerState,
    iso_now,
    render_frame,
)
from bus.shared_script import SharedScript

__all__ = ["FINISH_CLOSE", "OPEN", "ChatAnswering", "JobClose", "Opening"]

#: KEYS: the six chat keys, the chat's lease. ARGV: channel, processing state, maxlen,
#: msg_maxlen, ttl_ms, message id, known entry id ('' none), window, message known to the
#: caller (0/1), lease owner ('' leaves the lease alone), lease ttl_ms, n, then n message ids
#: whose tool memory is wanted (the new entries' visitor messages and the questions of their
#: replies are added), then departed workers (their lease is taken at once: LEASE_ACQUIRE).
#: -> {'dup'} | {'busy'} (another worker holds the lease; nothing set)
#:    | {status, fresh, entries, memory ids, memory values, streaming, cancel} with status
#:    'open' (state set) or 'unknown' (the message is not in the window: no state set);
#:    ``fresh`` 1 when the entries replace the caller's copy (newest first either way).
OPEN = (
    scripts._APPEND_FN
    + """
if redis.call('HEXISTS', KEYS[4], ARGV[6]) == 1 then return {'dup'} end
local n = tonumber(ARGV[12])
if ARGV[10] ~= '' then
  local holder = redis.call('GET', KEYS[7])
  local free = (not holder) or holder == ARGV[10]
  for i = 13 + n, #ARGV do if holder == ARGV[i] then free = true end end
  if not free then return {'busy'} end
  redis.call('SET', KEYS[7], ARGV[10], 'PX', ARGV[11])
end
local min, fresh = '-', 1
if ARGV[7] ~= '' and #redis.call('XRANGE', KEYS[3], ARGV[7], ARGV[7]) == 1 then
  min, fresh = '(' .. ARGV[7], 0
end
local entries = redis.call('XREVRANGE', KEYS[3], '+', min, 'COUNT', ARGV[8])
local found = fresh == 0 and ARGV[9] == '1'  -- the caller's copy is of this log
local ids = {ARGV[6]}
for i = 13, 12 + n do ids[#ids + 1] = ARGV[i] end
for _, entry in ipairs(entries) do
  local ok, m = pcall(cjson.decode, entry[2][2])
  if ok and type(m) == 'table' then
    if m['id'] == ARGV[6] then found = true end
    if m['sender'] == 'Terra' and type(m['replyTo']) == 'string' then
      ids[#ids + 1] = m['replyTo']
    elseif m['sender'] == 'Visitor' and type(m['id']) == 'string' then
      ids[#ids + 1] = m['id']
    end
  end
end
local memory = redis.call('HMGET', KEYS[5], unpack(ids))
local status = 'unknown'
if found then
  status = 'open'
  append(ARGV[1], ARGV[2], 'state', ARGV[3], ARGV[4])
  refresh(ARGV[5])
end
local streaming = redis.call('HGET', KEYS[2], 'streaming') or ''
local cancel = redis.call('GET', KEYS[6]) or ''
return {status, fresh, entries, ids, memory, streaming, cancel}
"""
)

# FINISH, closing the job at both of its returns. KEYS[7]: lease, KEYS[8]: jobs stream.
_FINISH_RETURNS = ("return {'dup', existing}", "return {'new', mid}")
_CLOSE_FN = scripts._JOBS_TRIM_FN.replace("KEYS[1]", "KEYS[8]") + (
    """
local function close_job()
  redis.call('XACK', KEYS[8], ARGV[9], ARGV[10])
  trim_finished(ARGV[9])
  if redis.call('GET', KEYS[7]) == ARGV[11] then redis.call('DEL', KEYS[7]) end
end
"""
)


# FINISH's Message; the last chunk (ARGV[12], '' none) goes just before it, after the dup check.
_FINISH_MESSAGE = "local mid = append(ARGV[1], ARGV[2], 'message', ARGV[6], ARGV[7])"
_LAST_CHUNK = "if ARGV[12] ~= '' then append(ARGV[1], ARGV[12], 'chunk', ARGV[6], ARGV[7]) end\n"


def _finish_close(finish: str) -> str:
    for ret in _FINISH_RETURNS:
        if finish.count(ret) != 1:
            raise RuntimeError(f"bus.scripts.FINISH changed: {ret!r} not found once")
        finish = finish.replace(ret, f"close_job() {ret}")
    if finish.count(_FINISH_MESSAGE) != 1:
        raise RuntimeError("bus.scripts.FINISH changed: its Message append not found once")
    finish = finish.replace(_FINISH_MESSAGE, _LAST_CHUNK + _FINISH_MESSAGE)
    return _CLOSE_FN + finish


#: KEYS: the six chat keys, the chat's lease, the job's jobs stream.
#: ARGV: FINISH's eight, then group, job entry id, lease owner, last chunk event ('' none)
#: -> as FINISH
FINISH_CLOSE = _finish_close(scripts.FINISH)


@dataclass(frozen=True, slots=True)
class JobClose:
    """The job a reply ends: acked, and the chat's lease released, with the reply."""

    entry_id: str
    partition: int
    lease_owner: str


@dataclass(slots=True)
class Opening:
    """What :meth:`ChatAnswering.open` learnt (see :data:`OPEN`)."""

    #: ``open`` (state set), ``unknown`` (the message is not in the window), ``dup`` (it
    #: has a reply) or ``busy`` (another worker holds the chat's lease).
    status: str
    #: The entries replace the caller's copy (it was stale or absent).
    fresh: bool = True
    #: Messages newer than the caller's copy (or the newest ``window``), newest first.
    entries: list[tuple[str, MessagePosted]] = field(default_factory=list)
    #: Saved tool turns of the asked messages (None: none saved or unreadable).
    memory: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)
    #: Visitor message whose reply has chunks and no final Message ('' none).
    streaming: str = ""
    #: Visitor message whose reply the visitor asked to stop ('' none).
    cancel: str = ""


def _turns(raw: object) -> list[dict[str, Any]] | None:
    if not isinstance(raw, str):
        return None
    try:
        turns = json.loads(raw)
    except ValueError:
        return None
    if isinstance(turns, list) and all(isinstance(t, dict) for t in turns):
        return turns
    return None


@translates_redis_errors
class ChatAnswering:
    """The OPEN and FINISH_CLOSE round trips of one chat log (see the module doc)."""

    def __init__(self, log: ChatLog, lease: ChatLease | None = None) -> None:
        self.log = log
        #: The chat leases OPEN takes (``lease=True``) and FINISH_CLOSE releases.
        self.lease = lease
        cluster = log.keys.cluster
        # Loaded once on NOSCRIPT however many answers start at once (bus.shared_script).
        self._open = SharedScript(log.redis, scripts.for_layout(OPEN, cluster))
        self._finish_close = SharedScript(log.redis, scripts.for_layout(FINISH_CLOSE, cluster))

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
        """One round trip before answering ``message_id`` (see :data:`OPEN`).

        With ``lease``, the chat's lease is taken first (as ``ChatLease.acquire`` with
        ``departed``); status ``busy`` when another worker holds it.
        """
        log = self.log
        owner, ttl = "", 0
        if lease:
            if self.lease is None:
                raise ValueError("no ChatLease to take")
            owner, ttl = self.lease.owner, self.lease.ttl_ms
        lim = log.limits
        try:
            reply = await self._open(
                keys=[*log.chat_keys(chat_id), log.keys.chat_lease(chat_id)],
                args=[
                    log.keys.chat_channel(chat_id),
                    _state_json(chat_id, "processing", None, iso_now()),
                    lim.events_maxlen,
                    lim.messages_maxlen,
                    lim.retention_ms,
                    message_id,
                    known or "",
                    window,
                    "1" if known_has_message else "0",
                    owner,
                    ttl,
                    len(memory_ids),
                    *memory_ids,
                    *departed,
                ],
            )
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)
        if reply[0] in ("dup", "busy"):
            return Opening(str(reply[0]))
        status, fresh, entries, ids, values, streaming, cancel = reply
        return Opening(
            status=str(status),
            fresh=bool(int(fresh)),
            entries=[(str(eid), log._message(str(eid), str(flat[1]))) for eid, flat in entries],
            memory={str(i): _turns(v) for i, v in zip(ids, values, strict=True)},
            streaming=str(streaming),
            cancel=str(cancel),
        )

    async def finish_and_close(
        self,
        chat_id: str,
        reply_to: str,
        content: str,
        *,
        status: Literal["complete", "stopped", "error", "truncated"],
        state: WorkerState,
        detail: str | None,
        close: JobClose,
        last_chunk: str = "",
    ) -> tuple[dict[str, Any], bool]:
        """:meth:`bus.chatlog.ChatLog.finish_reply`, acking the job and releasing the lease
        in the same round trip (also when a reply existed: then only those two).

        ``last_chunk``: reply text not written as a chunk yet, appended as one just before
        the Message (not when a reply existed).
        """
        log = self.log
        keys = log.keys
        lim = log.limits
        now = iso_now()
        # orjson, not pydantic models (issue 10): the same fields in the same order.
        message: dict[str, Any] = {
            "type": "message",
            "v": 1,
            "id": str(uuid.uuid4()),
            "chatId": chat_id,
            "sender": "Terra",
            "content": content,
            "createdAt": now,
            "replyTo": reply_to,
            "status": None if status == "complete" else status,
            "provider": None,
            "model": None,
        }
        done = {
            "type": "assistantChunk",
            "v": 1,
            "chatId": chat_id,
            "content": "",
            "done": True,
            "emittedAt": now,
            "replyTo": reply_to,
        }
        log._recent.pop(chat_id, None)  # a new Message: ChatLog's snapshot is stale
        try:
            result = await self._finish_close(
                keys=[
                    *log.chat_keys(chat_id),
                    keys.chat_lease(chat_id),
                    keys.jobs_stream(close.partition),
                ],
                args=[
                    keys.chat_channel(chat_id),
                    orjson.dumps(message).decode(),
                    reply_to,
                    orjson.dumps(done).decode(),
                    _state_json(chat_id, state, detail, now),
                    lim.events_maxlen,
                    lim.messages_maxlen,
                    lim.retention_ms,
                    keys.jobs_group,
                    close.entry_id,
                    close.lease_owner,
                    chunk_json(chat_id, reply_to, last_chunk, now) if last_chunk else "",
                ],
            )
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)
        if result[0] == "dup":
            return {"eventId": str(result[1])}, True
        return render_frame(message, str(result[1])), False


def _state_json(chat_id: str, state: WorkerState, detail: str | None, at: str) -> str:
    """A :class:`bus.schemas.WorkerStateChanged` event as stored, without a pydantic model."""
    return orjson.dumps(
        {
            "type": "workerState",
            "v": 1,
            "chatId": chat_id,
            "state": state,
            "detail": detail,
            "updatedAt": at,
        }
    ).decode()

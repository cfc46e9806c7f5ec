"""Lua scripts that make each bus write one atomic round trip.

Every event append does, in one script: XADD to the chat's event log (capped with
``MAXLEN ~``), remember the new id as the chat's ``last`` (and the log's ``epoch`` the
first time), mirror Messages into the messages stream under the same id, refresh the
idle retention of the chat's keys, and PUBLISH ``"<prevId> <id> <json>"`` on the chat's
channel. Carrying the previous id lets a subscriber notice a lost pub/sub message and
fill the gap from the log.

Key order shared by the chat scripts: events, meta, messages, replies, memory, cancel.
"""

from __future__ import annotations

__all__ = [
    "ACCEPT",
    "APPEND",
    "CHUNK",
    "FINISH",
    "JOBS_RELEASE",
    "JOBS_TOUCH",
    "LEASE_ACQUIRE",
    "LEASE_RELEASE",
    "RATE_HIT",
]

_APPEND_FN = """
local function refresh(ttl)
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
local function append(channel, data, kind, maxlen, msg_maxlen)
  local prev = redis.call('HGET', KEYS[2], 'last') or '0-0'
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'd', data)
  redis.call('HSETNX', KEYS[2], 'epoch', id)
  redis.call('HSET', KEYS[2], 'last', id)
  if kind == 'message' then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', msg_maxlen, id, 'd', data)
  elseif kind == 'state' then
    redis.call('HSET', KEYS[2], 'state', data, 'state_id', id)
  end
  redis.call('PUBLISH', channel, prev .. ' ' .. id .. ' ' .. data)
  return id
end
"""

#: ARGV: channel, data, kind, maxlen, msg_maxlen, ttl_ms -> event id
APPEND = (
    _APPEND_FN
    + """
local id = append(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
refresh(ARGV[6])
return id
"""
)

#: Also records ``reply_to`` as the meta's ``streaming`` field (a reply with chunks in the
#: log and no final Message yet; FINISH clears it), so a retry knows to reset the stream,
#: and, at the reply's first chunk, ``streaming_after``: the event before it, where a client
#: joining mid-reply starts so it gets the whole partial answer.
#: ARGV: channel, data, maxlen, msg_maxlen, ttl_ms, reply_to -> {id, cancelled (0/1)}
CHUNK = (
    _APPEND_FN
    + """
if redis.call('HGET', KEYS[2], 'streaming') ~= ARGV[6] then
  redis.call('HSET', KEYS[2], 'streaming_after', redis.call('HGET', KEYS[2], 'last') or '0-0')
end
local id = append(ARGV[1], ARGV[2], 'chunk', ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], 'streaming', ARGV[6])
refresh(ARGV[5])
local cancelled = 0
if redis.call('GET', KEYS[6]) == ARGV[6] then cancelled = 1 end
return {id, cancelled}
"""
)

#: KEYS: the five chat keys, idempotency key (or the events key again when unused), jobs.
#: ARGV: channel, message, queued state, maxlen, msg_maxlen, ttl_ms, idem_ttl_ms, use_idem,
#:       job, jobs_maxlen
#: -> {'new', message id, state id, job id} | {'dup', "<id> <message json>"} | {'full'}
#: Jobs are never trimmed here: with ``jobs_maxlen`` unfinished jobs in the stream (workers
#: trim finished ones when they ack), nothing is stored and the caller is told to back off.
ACCEPT = (
    _APPEND_FN
    + """
if ARGV[8] == '1' then
  local existing = redis.call('GET', KEYS[6])
  if existing then return {'dup', existing} end
end
if redis.call('XLEN', KEYS[7]) >= tonumber(ARGV[10]) then return {'full'} end
local mid = append(ARGV[1], ARGV[2], 'message', ARGV[4], ARGV[5])
local sid = append(ARGV[1], ARGV[3], 'state', ARGV[4], ARGV[5])
local jid = redis.call('XADD', KEYS[7], '*', 'd', ARGV[9])
if ARGV[8] == '1' then
  redis.call('SET', KEYS[6], mid .. ' ' .. ARGV[2], 'PX', ARGV[7])
end
refresh(ARGV[6])
return {'new', mid, sid, jid}
"""
)

#: Terra's final reply: the Message, then the done chunk, then the worker state, unless a
#: reply to the same visitor message already exists (then nothing is written).
#: ARGV: channel, message, reply_to, done chunk, state, maxlen, msg_maxlen, ttl_ms
#: -> {'new', message id} | {'dup', existing message id}
FINISH = (
    _APPEND_FN
    + """
local existing = redis.call('HGET', KEYS[4], ARGV[3])
if existing then return {'dup', existing} end
local mid = append(ARGV[1], ARGV[2], 'message', ARGV[6], ARGV[7])
redis.call('HSET', KEYS[4], ARGV[3], mid)
append(ARGV[1], ARGV[4], 'chunk', ARGV[6], ARGV[7])
append(ARGV[1], ARGV[5], 'state', ARGV[6], ARGV[7])
if redis.call('HGET', KEYS[2], 'streaming') == ARGV[3] then
  redis.call('HDEL', KEYS[2], 'streaming', 'streaming_after')
end
if redis.call('GET', KEYS[6]) == ARGV[3] then redis.call('DEL', KEYS[6]) end
refresh(ARGV[8])
return {'new', mid}
"""
)

#: Fixed-window counter. KEYS: counter. ARGV: window_ms -> {count, pttl_ms}
RATE_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""

#: Take or renew a lease held by ARGV[1]; a lease held by a departed worker (ARGV[3...])
#: is taken over at once. KEYS: lease. ARGV: owner, ttl_ms, departed... -> 1 | 0
LEASE_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
local gone = false
for i = 3, #ARGV do if holder == ARGV[i] then gone = true end end
if (not holder) or holder == ARGV[1] or gone then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

#: Release a lease only if ARGV[1] still holds it. KEYS: lease -> 1 | 0
LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_JOBS_OWNED_FN = """
local function owned(id)
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)[1]
  if not row then return nil end
  return row[2] == ARGV[2]
end
"""

#: Renew (idle time back to 0) the pending jobs still owned by ARGV[2]; never takes a job
#: another consumer reclaimed meanwhile. KEYS: jobs. ARGV: group, consumer, ids...
#: -> ids now pending under another consumer
JOBS_TOUCH = (
    _JOBS_OWNED_FN
    + """
local lost = {}
for i = 3, #ARGV do
  local mine = owned(ARGV[i])
  if mine then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  elseif mine == false then
    table.insert(lost, ARGV[i])
  end
end
return lost
"""
)

#: Hand back pending jobs owned by ARGV[2]: their idle time becomes ARGV[3] ms, so the next
#: reclaim sweep (of any consumer) takes them. JUSTID: the delivery count is unchanged.
#: KEYS: jobs. ARGV: group, consumer, idle_ms, ids... -> number released
JOBS_RELEASE = (
    _JOBS_OWNED_FN
    + """
local n = 0
for i = 4, #ARGV do
  if owned(ARGV[i]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    n = n + 1
  end
end
return n
"""
)

#: Drop the group's finished jobs from the front of the stream: everything before the oldest
#: pending job, or before the last delivered one when none is pending. Jobs never delivered
#: or still pending are never trimmed (the backlog is bounded at enqueue time instead).
_JOBS_TRIM_FN = """
local function trim_finished(group)
  local last = nil
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, delivered = nil, nil
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1] end
      if info[i] == 'last-delivered-id' then delivered = info[i + 1] end
    end
    if name == group then last = delivered end
  end
  if not last or last == '0-0' then return 0 end
  local summary = redis.call('XPENDING', KEYS[1], group)
  local floor
  if tonumber(summary[1]) > 0 then
    floor = summary[2]
  else
    local ms, seq = string.match(last, '^(%d+)-(%d+)$')
    floor = ms .. '-' .. (tonumber(seq) + 1)
  end
  return redis.call('XTRIM', KEYS[1], 'MINID', floor)
end
"""

#: Acknowledge a job and trim finished ones, in one round trip.
#: KEYS: jobs. ARGV: group, entry id -> acked (0/1)
JOBS_ACK = (
    _JOBS_TRIM_FN
    + """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
trim_finished(ARGV[1])
return acked
"""
)

#: Acknowledge a job and copy it to the dead letters with its reason, atomically (a crash
#: can no longer dead-letter it twice), and only if it was still pending: run again (a reply
#: lost and the command retried, or a worker that took the job over) it changes nothing.
#: KEYS: jobs, dead letters. ARGV: group, entry id, dead-letter maxlen, field, value, ...
#: -> dead-letter entry id, or false when the job was no longer pending
JOBS_DEAD_LETTER = (
    _JOBS_TRIM_FN
    + """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
local fields = {}
for i = 4, #ARGV do table.insert(fields, ARGV[i]) end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
trim_finished(ARGV[1])
return id
"""
)

#: Take over every job pending under a departed consumer, atomically: two workers taking
#: over at once never claim the same job. KEYS: jobs. ARGV: group, departed, me, count
#: -> claimed entries ``{id, fields}`` (each counts one more delivery)
JOBS_TAKE_OVER = """
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[4], ARGV[2])
local ids = {}
for _, row in ipairs(rows) do table.insert(ids, row[1]) end
if #ids == 0 then return {} end
return redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, unpack(ids))
"""

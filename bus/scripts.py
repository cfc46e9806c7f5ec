"""Lua scripts that make each bus write one atomic round trip.

Every event append does, in one script: XADD to the chat's event log (capped with
``MAXLEN ~``), remember the new id as the chat's ``last`` (and the log's ``epoch`` the
first time), mirror Messages into the messages stream under the same id, refresh the
idle retention of the chat's keys, and PUBLISH ``"<prevId> <id> <json>"`` on the chat's
channel. Carrying the previous id lets a subscriber notice a lost pub/sub message and
fill the gap from the log.

Key order shared by the chat scripts: events, meta, messages, replies, memory, cancel.

On Redis Cluster the scripts publish with SPUBLISH (sharded pub/sub: the chat's channel
has its keys' slot, and the cluster bus relays nothing) instead of PUBLISH (relayed to
every node): :func:`for_layout` gives each script's text for the deployment. Every script
touches one slot: a chat's keys, or one partition's queue keys, or both (ACCEPT).
"""

from __future__ import annotations

__all__ = [
    "ACCEPT",
    "APPEND",
    "BEGIN",
    "CHUNK",
    "CLIENT_BYTES",
    "CLIENT_BYTES_REFUND",
    "FINISH",
    "JOBS_RELEASE",
    "JOBS_TAKE",
    "JOBS_TOUCH",
    "LEASE_ACQUIRE",
    "LEASE_RELEASE",
    "RATE_HIT",
    "SAVE_TOOL_TURNS",
    "for_layout",
]

_PUBLISH = "redis.call('PUBLISH', "


def for_layout(script: str, cluster: bool) -> str:
    """``script`` as the deployment runs it: chat events SPUBLISHed on a cluster (sharded
    pub/sub), PUBLISHed on a single Redis (the feed subscribes accordingly)."""
    return script.replace(_PUBLISH, "redis.call('SPUBLISH', ") if cluster else script


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

#: Begin answering a visitor message, in one round trip: the chat's state event (the
#: worker is ``processing``) and what the answer must know first: whether an earlier
#: attempt left chunks of this reply (it then starts with a ``streamReset``) and whether the
#: visitor already asked to stop it. Issue 10: three round trips were one each.
#: KEYS: the six chat keys. ARGV: channel, state event, maxlen, msg_maxlen, ttl_ms, reply_to
#: -> {state id, streaming (0/1), cancelled (0/1)}
BEGIN = (
    _APPEND_FN
    + """
local id = append(ARGV[1], ARGV[2], 'state', ARGV[3], ARGV[4])
refresh(ARGV[5])
local streaming = 0
if redis.call('HGET', KEYS[2], 'streaming') == ARGV[6] then streaming = 1 end
local cancelled = 0
if redis.call('GET', KEYS[6]) == ARGV[6] then cancelled = 1 end
return {id, streaming, cancelled}
"""
)

#: Fair scheduling. A visitor message's job first waits in its client's *lane* (a list
#: under ``<prefix>:queue:lane:<tag>``); the *ring* (a sorted set) holds the clients whose
#: lane is not empty, least recently served first, and jobs move from the lanes into the
#: jobs stream one client at a time: round robin, where a client that was just served
#: goes behind one that joins now. The stream holds at most about one job no worker has
#: taken yet, so a client's backlog delays another visitor by about one job, not by its
#: backlog. The move is atomic (LPOP from the lane and XADD in one script), so no job is
#: lost between lane and stream; once in the stream, a job has every guarantee of
#: bus.jobs. Invariant: a client's tag is in the ring exactly when its lane is not empty.
#: ``undelivered`` is the group's ``lag`` (Redis >= 7), else XLEN minus pending (an
#: over-count when finished jobs wait behind a pending one: a job then waits at most one
#: blocking read, ``JOB_BLOCK_MS``, for a worker's next take).
_QUEUE_FN = """
local SERVED_MEMORY_MS = 600000
local function undelivered(jobs, group)
  local groups = redis.pcall('XINFO', 'GROUPS', jobs)
  if type(groups) ~= 'table' or groups['err'] then return 0 end
  for _, info in ipairs(groups) do
    local f = {}
    for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
    if f['name'] == group then
      if type(f['lag']) == 'number' then return f['lag'] end
      return math.max(0, redis.call('XLEN', jobs) - tonumber(f['pending']))
    end
  end
  return redis.call('XLEN', jobs)
end
local function join(ring, clock, lane_prefix, tag)
  local score = tonumber(redis.call('GET', lane_prefix .. tag .. ':served') or '')
  if not score then  -- not served lately: after everyone waiting, in the order they came
    local joins = redis.call('HINCRBY', clock, 'joins', 1)
    score = tonumber(redis.call('HGET', clock, 'seq') or '0') - 0.5 + joins * 1e-7
  end
  redis.call('ZADD', ring, score, tag)
end
local function promote(jobs, ring, waiting, clock, lane_prefix, want)
  local n = 0
  while n < want do
    local head = redis.call('ZPOPMIN', ring)
    if #head == 0 then break end
    local tag = head[1]
    local lane = lane_prefix .. tag
    local job = redis.call('LPOP', lane)
    local now = redis.call('HINCRBY', clock, 'seq', 1)
    redis.call('HSET', clock, 'joins', 0)
    if job then
      redis.call('XADD', jobs, '*', 'd', job)
      if tonumber(redis.call('DECR', waiting)) < 0 then redis.call('SET', waiting, 0) end
      n = n + 1
    end
    redis.call('SET', lane .. ':served', now, 'PX', SERVED_MEMORY_MS)
    if redis.call('LLEN', lane) > 0 then redis.call('ZADD', ring, now, tag) end
  end
  return n
end
"""

#: Redis's memory against the accept budget: ``budget`` bytes when positive; when 0, the
#: ``fraction`` of ``maxmemory`` (none set: no budget). -> true when over the budget.
#: A server without INFO (an ACL without +info, a test double) has no budget: refusing
#: every message would be an outage; Redis's own maxmemory refusal still applies.
_MEMORY_FN = """
local function over_budget(budget, fraction)
  budget = tonumber(budget)
  if budget < 0 then return false end
  local info = redis.pcall('INFO', 'memory')
  if type(info) ~= 'string' then return false end
  local used = tonumber(string.match(info, 'used_memory:(%d+)') or '0')
  if budget == 0 then
    local max = tonumber(string.match(info, 'maxmemory:(%d+)') or '0')
    if max == 0 then return false end
    budget = max * tonumber(fraction)
  end
  return used >= budget
end
"""

#: KEYS: the five chat keys, idempotency key (or the events key again when unused), jobs,
#:       ring, waiting, clock.
#: ARGV: channel, message, queued state, maxlen, msg_maxlen, ttl_ms, idem_ttl_ms, use_idem,
#:       job, jobs_maxlen, group, lane prefix, client tag, lane cap, memory budget bytes
#:       (-1 off, 0 derived), budget fraction of maxmemory, client bytes per window,
#:       window ms, chat bytes cap, reply bytes reserved (counted for the client only)
#: -> {'new', message id, state id} | {'dup', "<id> <message json>"} | {'full'}
#:    | {'memory'} | {'busy', jobs waiting in the lane} | {'client_bytes', retry ms}
#:    | {'chat_bytes'} | {'byo'}
#: A chat is Terra's or BYO from its first message (docs/protocol.md 9.10): the meta's
#: ``mode`` is checked and set here, in the same script as the message (BYO_ACCEPT in
#: bus.byo does the same), so two first messages racing on an empty chat never both land.
#: Stored bytes (message, state and job JSON) are counted per client in a fixed window
#: (``<lane prefix><client tag>:bytes``, with the reply's reservation) and per chat over
#: its life (meta ``bytes``).
#: Nothing is stored on a refusal. Jobs are never trimmed here: with ``jobs_maxlen``
#: unfinished jobs (in the stream and the lanes) the caller is told to back off; above the
#: memory budget likewise (Redis runs ``noeviction``: accepted data is never evicted, and
#: the room left is for the replies to what was accepted); with ``lane cap`` jobs already
#: waiting in the client's lane, that client is told to wait. A chat keeps the lane its
#: waiting jobs are in (a visitor changing networks mid-backlog), so a chat's jobs reach
#: the stream in order.
ACCEPT = (
    _APPEND_FN
    + _QUEUE_FN
    + _MEMORY_FN
    + """
if ARGV[8] == '1' then
  local existing = redis.call('GET', KEYS[6])
  if existing then return {'dup', existing} end
end
if redis.call('HGET', KEYS[2], 'mode') == 'byo' then return {'byo'} end
if over_budget(ARGV[15], ARGV[16]) then return {'memory'} end
local waiting = tonumber(redis.call('GET', KEYS[9]) or '0')
if redis.call('XLEN', KEYS[7]) + waiting >= tonumber(ARGV[10]) then return {'full'} end
local tag = ARGV[13]
local prior = redis.call('HGET', KEYS[2], 'lane')
if prior and prior ~= tag and redis.call('LLEN', ARGV[12] .. prior) > 0 then tag = prior end
local lane = ARGV[12] .. tag
local queued = redis.call('LLEN', lane)
if queued >= tonumber(ARGV[14]) then return {'busy', queued} end
local size = #ARGV[2] + #ARGV[3] + #ARGV[9]
if tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0') + size > tonumber(ARGV[19]) then
  return {'chat_bytes'}
end
if tonumber(ARGV[17]) >= 0 then  -- negative: the caller charged the client (CLIENT_BYTES)
  local spent = ARGV[12] .. ARGV[13] .. ':bytes'
  local charge = size + tonumber(ARGV[20])
  if tonumber(redis.call('GET', spent) or '0') + charge > tonumber(ARGV[17]) then
    return {'client_bytes', redis.call('PTTL', spent)}
  end
  if redis.call('INCRBY', spent, charge) == charge then redis.call('PEXPIRE', spent, ARGV[18]) end
end
redis.call('HINCRBY', KEYS[2], 'bytes', size)
local mid = append(ARGV[1], ARGV[2], 'message', ARGV[4], ARGV[5])
local sid = append(ARGV[1], ARGV[3], 'state', ARGV[4], ARGV[5])
redis.call('HSET', KEYS[2], 'lane', tag, 'mode', 'terra')
if redis.call('RPUSH', lane, ARGV[9]) == 1 then join(KEYS[8], KEYS[10], ARGV[12], tag) end
redis.call('INCR', KEYS[9])
if undelivered(KEYS[7], ARGV[11]) < 1 then
  promote(KEYS[7], KEYS[8], KEYS[9], KEYS[10], ARGV[12], 1)
end
if ARGV[8] == '1' then
  redis.call('SET', KEYS[6], mid .. ' ' .. ARGV[2], 'PX', ARGV[7])
end
refresh(ARGV[6])
return {'new', mid, sid}
"""
)

#: A worker's take: move jobs from the lanes round robin until ``count`` + ``keep`` jobs
#: are ready, then read up to ``count`` of them for this consumer (XREADGROUP, not
#: blocking). ``count`` 0 with ``keep`` 1 only refills: one job ready wakes the next idle
#: worker's blocking read.
#: KEYS: jobs, ring, waiting, clock. ARGV: group, consumer, count, keep, lane prefix
#: -> XREADGROUP's reply (or an empty list)
JOBS_TAKE = (
    _QUEUE_FN
    + """
local count = tonumber(ARGV[3])
local target = count + tonumber(ARGV[4])
local ready = undelivered(KEYS[1], ARGV[1])
if ready < target then promote(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[5], target - ready) end
if count < 1 then return {} end
return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count, 'STREAMS', KEYS[1], '>')
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

#: Keep the tool turns answering a visitor message took (replacing earlier ones), with the
#: chat's retention. One script (a MULTI would not run on a cluster client).
#: KEYS: memory. ARGV: visitor message id, turns JSON, ttl_ms
SAVE_TOOL_TURNS = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

#: A client's stored bytes in the window, charged apart from the accept script: on a
#: partitioned layout a client's chats fall in several partitions (slots), so its one
#: counter cannot be in each accept script. Reserved before the accept (refused when the
#: charge would pass the cap), given back when the accept stores nothing.
#: KEYS: the client's bytes counter. ARGV: charge, cap, window_ms -> {1, 0} | {0, retry ms}
CLIENT_BYTES = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return {0, redis.call('PTTL', KEYS[1])} end
if redis.call('INCRBY', KEYS[1], ARGV[1]) == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, 0}
"""

#: Give back a reservation of :data:`CLIENT_BYTES` (never below 0, never a counter without
#: its expiry). KEYS: the client's bytes counter. ARGV: charge
CLIENT_BYTES_REFUND = """
local spent = redis.call('GET', KEYS[1])
if not spent then return 0 end
local left = math.max(0, tonumber(spent) - tonumber(ARGV[1]))
redis.call('SET', KEYS[1], left, 'KEEPTTL')
return left
"""

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
#: reclaim sweep (of any consumer) takes them. Their delivery count goes down by one, so that
#: reclaim costs none: a job handed back at a graceful stop did not fail, and only
#: deliveries that ended with the worker dead count towards dead-lettering.
#: KEYS: jobs. ARGV: group, consumer, idle_ms, ids... -> number released
JOBS_RELEASE = """
local n = 0
for i = 4, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if row and row[2] == ARGV[2] then
    local count = math.max(tonumber(row[4]) - 1, 0)
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3],
      'RETRYCOUNT', count, 'JUSTID')
    n = n + 1
  end
end
return n
"""

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

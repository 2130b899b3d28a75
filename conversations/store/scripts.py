"""Lua scripts run by the store. Each touches only the keys passed in KEYS, which share one hash tag
(the session's) except the optional owner index: that one is passed only on a single Redis, where
one script may span slots; on a Redis Cluster the store updates the index in a separate call.

Times come from Redis's own clock (``TIME``), so message order and ``created_at`` agree even when
several application servers' clocks do not. Times are integer milliseconds since the epoch.

A session whose message list is not ``count`` long is treated as gone by every script that reads or
writes it (one O(1) ``LLEN``, or the length ``RPUSH`` returns). The scripts never leave a session that
way; only an evicting Redis (``maxmemory-policy`` other than ``noeviction``), which drops whole keys,
can. Without this check a read would show ``count`` messages and none, and the next append would land
at the wrong list index.
"""

from __future__ import annotations

# ``expires`` is the absolute expiry (now + ttl_ms). TTLs are set with PEXPIREAT on it rather than
# PEXPIRE: Redis rewrites every PEXPIRE a script runs into a PEXPIREAT (for replication) at a cost per
# call, and numbers passed to redis.call are formatted at a cost too, so the scripts pass strings.
_NOW = """
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local now = string.format('%d', ms)
local expires = string.format('%d', ms + ARGV[{ttl}])
"""

_INDEX = """
if KEYS[{n}] then
  redis.call('ZADD', KEYS[{n}], now, ARGV[{sid}])
  redis.call('PEXPIREAT', KEYS[{n}], expires)
end
"""

# KEYS: meta, [index]   ARGV: owner, title, metadata, ttl_ms, session_id
CREATE = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
"""
    + _NOW.format(ttl=4)
    + """
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[2], 'metadata', ARGV[3],
           'created_at', now, 'updated_at', now, 'count', '0')
redis.call('PEXPIREAT', KEYS[1], expires)
"""
    + _INDEX.format(n=2, sid=5)
    + """
return now
"""
)

# KEYS: meta, msgs, idem, [index]
# ARGV: owner, message body (JSON object without its opening brace), ttl_ms, max_messages, session_id,
#       and only with an idempotency key: its digest, the request's fingerprint
# Returns {id, now} on append, {-1} not found, {-2} full, {-3} key reused with another body,
#         {-4, stored message} when the idempotency key was seen before (nothing appended).
# This is the hottest path, so it runs as few commands as it can: the list length check rides on
# RPUSH's reply (undone if wrong; only the rare paths that return before RPUSH call LLEN), and the
# idempotency hash is renewed only when the meta hash's ``idem`` flag says it exists.
APPEND = (
    """
local m = redis.call('HMGET', KEYS[1], 'owner', 'count', 'idem')
if m[1] ~= ARGV[1] then return {-1} end
local n = tonumber(m[2])
if ARGV[6] then
  if redis.call('LLEN', KEYS[2]) ~= n then return {-1} end
  local prior = redis.call('HGET', KEYS[3], ARGV[6])
  if prior then
    local sp = string.find(prior, ' ', 1, true)
    if string.sub(prior, 1, sp - 1) ~= ARGV[7] then return {-3} end
    -- Rewrite the same value: a write changing nothing, so that a WAIT after this replay covers the
    -- first call's append too (REPLICA_ACKS), even when that call's own WAIT timed out.
    redis.call('HSET', KEYS[3], ARGV[6], prior)
    return {-4, redis.call('LINDEX', KEYS[2], tonumber(string.sub(prior, sp + 1)) - 1)}
  end
end
if n >= tonumber(ARGV[4]) then
  if redis.call('LLEN', KEYS[2]) ~= n then return {-1} end
  return {-2}
end
n = n + 1
"""
    + _NOW.format(ttl=3)
    + """
local id = string.format('%d', n)
if redis.call('RPUSH', KEYS[2], '{"id":' .. id .. ',"created_at":' .. now .. ',' .. ARGV[2]) ~= n then
  redis.call('RPOP', KEYS[2])
  return {-1}
end
if ARGV[6] then
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[7] .. ' ' .. id)
  redis.call('HSET', KEYS[1], 'count', id, 'updated_at', now, 'idem', '1')
else
  redis.call('HSET', KEYS[1], 'count', id, 'updated_at', now)
end
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('PEXPIREAT', KEYS[2], expires)
if m[3] or ARGV[6] then redis.call('PEXPIREAT', KEYS[3], expires) end
"""
    + _INDEX.format(n=4, sid=5)
    + """
return {n, now}
"""
)

# KEYS: meta, msgs, idem, [index]
# ARGV: owner, ttl_ms, session_id, set_title ('0'/'1'), title, set_metadata ('0'/'1'), metadata
# Returns {pttl, title, metadata, created_at, updated_at, count} or nil when not found.
UPDATE = (
    """
local m0 = redis.call('HMGET', KEYS[1], 'owner', 'count')
if m0[1] ~= ARGV[1] or redis.call('LLEN', KEYS[2]) ~= tonumber(m0[2]) then return false end
"""
    + _NOW.format(ttl=2)
    + """
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'title', ARGV[5]) end
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'metadata', ARGV[7]) end
redis.call('HSET', KEYS[1], 'updated_at', now)
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('PEXPIREAT', KEYS[2], expires)
redis.call('PEXPIREAT', KEYS[3], expires)
"""
    + _INDEX.format(n=4, sid=3)
    + """
local m = redis.call('HMGET', KEYS[1], 'title', 'metadata', 'created_at', 'updated_at', 'count')
table.insert(m, 1, redis.call('PTTL', KEYS[1]))
return m
"""
)

# KEYS: meta, msgs, idem, [index]   ARGV: owner, session_id
DELETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[2]) end
return 1
"""

# KEYS: meta, msgs   ARGV: owner, LRANGE start ('' to read no messages), LRANGE stop, with details ('0'/'1'),
#                          floor ('' or, for a window that ends before a message id, the lowest start allowed)
# Returns {pttl, created_at, updated_at, count, title|false, metadata|false, messages|false} or nil.
# Missing and another owner's session take the same path, so timing tells them apart no better than
# the answer does.
# A window ending before an id past the last message slides down to end at the last message (keeping
# its width, never below the floor): "the newest N before 50" in a 10-message session is ids 10-N+1..10.
READ = """
local m = redis.call('HMGET', KEYS[1], 'owner', 'created_at', 'updated_at', 'count', 'title', 'metadata')
if m[1] ~= ARGV[1] or redis.call('LLEN', KEYS[2]) ~= tonumber(m[4]) then return false end
m[1] = redis.call('PTTL', KEYS[1])
if ARGV[4] ~= '1' then m[5] = false; m[6] = false end
m[7] = false
if ARGV[2] ~= '' then
  local start, stop = tonumber(ARGV[2]), tonumber(ARGV[3])
  local last, floor = tonumber(m[4]) - 1, ARGV[5] or ''
  if floor ~= '' and stop > last then
    start = math.max(tonumber(floor), start - (stop - last))
    stop = last
  end
  if floor ~= '' and stop < start then m[7] = {} else m[7] = redis.call('LRANGE', KEYS[2], start, stop) end
end
return m
"""

# KEYS: meta, msgs   ARGV: owner, LRANGE start, LRANGE stop
# Returns the messages in that range (possibly none) or nil when not found. ``get_messages`` with a fixed
# range (the newest N, or a page after a position): it skips what READ also fetches, and compares owners
# before it reads a message, so another owner's session answers exactly like a missing one. A non-empty
# window shows the list is there; only an empty one needs the length check that tells an evicted list
# from a short one.
WINDOW = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
local r = redis.call('LRANGE', KEYS[2], ARGV[2], ARGV[3])
if #r == 0 and redis.call('LLEN', KEYS[2]) ~= tonumber(redis.call('HGET', KEYS[1], 'count')) then
  return false
end
return r
"""

"""Lua scripts run by the store. Each touches only the keys passed in KEYS, which share one hash tag
(the session's) except the optional owner index: that one is passed only on a single Redis, where
one script may span slots; on a Redis Cluster the store updates the index in a separate call.

Times come from Redis's own clock (``TIME``), so message order and ``created_at`` agree even when
several application servers' clocks do not. Times are integer milliseconds since the epoch.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
"""

_INDEX = """
if KEYS[{n}] then
  redis.call('ZADD', KEYS[{n}], now, ARGV[{sid}])
  redis.call('PEXPIRE', KEYS[{n}], ARGV[{ttl}])
end
"""

# KEYS: meta, [index]   ARGV: owner, title, metadata, ttl_ms, session_id
CREATE = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
"""
    + _NOW
    + """
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[2], 'metadata', ARGV[3],
           'created_at', now, 'updated_at', now, 'count', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
"""
    + _INDEX.format(n=2, sid=5, ttl=4)
    + """
return now
"""
)

# KEYS: meta, msgs, idem, [index]
# ARGV: owner, message body (JSON object without its opening brace), ttl_ms, max_messages, session_id,
#       idempotency key digest ('' for none), request fingerprint
# Returns {id, now} on append, {-1} not found, {-2} full, {-3} key reused with another body,
#         {-4, stored message} when the idempotency key was seen before (nothing appended).
APPEND = (
    """
local m = redis.call('HMGET', KEYS[1], 'owner', 'count')
if m[1] ~= ARGV[1] then return {-1} end
if ARGV[6] ~= '' then
  local prior = redis.call('HGET', KEYS[3], ARGV[6])
  if prior then
    local sp = string.find(prior, ' ', 1, true)
    if string.sub(prior, 1, sp - 1) ~= ARGV[7] then return {-3} end
    return {-4, redis.call('LINDEX', KEYS[2], tonumber(string.sub(prior, sp + 1)) - 1)}
  end
end
local n = tonumber(m[2])
if n >= tonumber(ARGV[4]) then return {-2} end
n = n + 1
"""
    + _NOW
    + """
redis.call('RPUSH', KEYS[2], '{"id":' .. n .. ',"created_at":' .. now .. ',' .. ARGV[2])
redis.call('HSET', KEYS[1], 'count', n, 'updated_at', now)
if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], ARGV[6], ARGV[7] .. ' ' .. n) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
"""
    + _INDEX.format(n=4, sid=5, ttl=3)
    + """
return {n, now}
"""
)

# KEYS: meta, msgs, idem, [index]
# ARGV: owner, ttl_ms, session_id, set_title ('0'/'1'), title, set_metadata ('0'/'1'), metadata
# Returns {pttl, title, metadata, created_at, updated_at, count} or nil when not found.
UPDATE = (
    """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
"""
    + _NOW
    + """
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'title', ARGV[5]) end
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'metadata', ARGV[7]) end
redis.call('HSET', KEYS[1], 'updated_at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
"""
    + _INDEX.format(n=4, sid=3, ttl=2)
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

# KEYS: meta, msgs   ARGV: owner, LRANGE start ('' to read no messages), LRANGE stop, with details ('0'/'1')
# Returns {pttl, created_at, updated_at, count, title|false, metadata|false, messages|false} or nil.
# Missing and another owner's session take the same path, so timing tells them apart no better than
# the answer does.
READ = """
local m = redis.call('HMGET', KEYS[1], 'owner', 'created_at', 'updated_at', 'count', 'title', 'metadata')
if m[1] ~= ARGV[1] then return false end
m[1] = redis.call('PTTL', KEYS[1])
if ARGV[4] ~= '1' then m[5] = false; m[6] = false end
if ARGV[2] ~= '' then m[7] = redis.call('LRANGE', KEYS[2], ARGV[2], ARGV[3]) else m[7] = false end
return m
"""

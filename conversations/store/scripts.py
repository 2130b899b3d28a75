"""Every Lua script the app runs, in one registry, each beside a comment of its KEYS and ARGV.

The transports run them by digest (EVALSHA, loading on NOSCRIPT). Scripts that only read start with
``#!lua flags=no-writes`` so that ``CLIENT PAUSE WRITE`` (failover tooling) does not hold them and a
full Redis (``maxmemory``) still serves them; Redis before 7.0 knows no such line, and the transports
fall back on ``LuaScript.plain`` there.

Session scripts touch only the keys passed in KEYS, which share one hash tag (the session's), except
the owner index and the create's idempotency record, which share the owner's: those are passed (and
touched) only on a single Redis; on a Redis Cluster the operations update them in a separate call.

Times come from Redis's own clock (``TIME``), so message order and ``created_at`` agree even when
several application servers' clocks do not. Times are integer milliseconds since the epoch.

A session whose message set does not hold ``count`` members is treated as gone by every script that
reads or writes it (one O(1) ``ZCARD``). The scripts never leave a session that way; only an evicting
Redis (``maxmemory-policy`` other than ``noeviction``), which drops whole keys, can.

The message wire format (a member of the message set) is described in ``codec``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

NO_WRITES = "#!lua flags=no-writes\n"


@dataclass(frozen=True)
class LuaScript:
    """A named script; ``sha`` is the digest of ``source``, what EVALSHA names."""

    name: str
    source: str
    sha: str = field(init=False)
    plain: LuaScript | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())
        plain = None
        if self.source.startswith("#!"):
            plain = LuaScript(self.name, self.source.split("\n", 1)[1])
        object.__setattr__(self, "plain", plain)

    @property
    def read_only(self) -> bool:
        return self.source.startswith(NO_WRITES)


# Status codes the session scripts return as the first element of their reply.
NOT_FOUND = -1  # missing, expired, another owner's, or half-evicted
FULL = -2  # MAX_MESSAGES reached
KEY_REUSED = -3  # an idempotency key seen before with another body
REPLAYED = -4  # an idempotency key seen before with this body: the stored messages follow
NO_MESSAGE = -5  # no message with that id
IDEMPOTENT_GONE = -6  # the messages an idempotency key created have since been removed
CORRUPT = -7  # the stored message is not of the stored shape
NOT_IN_PROGRESS = -8  # extend of a message that is not in progress
TOO_LONG = -10  # extend would take the content past the limit
LEGACY = -9  # the session has layout 1: run MIGRATE, then the script again

# --------------------------------------------------------------------------------- shared pieces
#
# Session write scripts take KEYS meta, m (messages), idem, ev (events) [, owner index] and begin
# with ARGV: 1 owner, 2 ttl_ms, 3 session id, 4 event mode ('' none, 'p' PUBLISH, 's' SPUBLISH),
# 5 event history length, 6 the owner's create-idempotency key prefix ('' on a cluster); their own
# arguments start at ARGV[7].

_SESSION = """
local m = redis.call('HMGET', KEYS[1], 'owner', 'count', 'seq', 'v', 'idem', 'cidem')
if m[1] ~= ARGV[1] then return {-1} end
if m[4] ~= '2' then return {-9} end
local count, seq = tonumber(m[2]), tonumber(m[3])
if redis.call('ZCARD', KEYS[2]) ~= count then return {-1} end
"""

# ``expires`` is the absolute expiry (now + ttl_ms). TTLs are set with PEXPIREAT on it rather than
# PEXPIRE: Redis rewrites every PEXPIRE a script runs into a PEXPIREAT (for replication) at a cost,
# and numbers passed to redis.call are formatted at a cost too, so the scripts pass strings.
_NOW = """
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local now = string.format('%d', ms)
local expires = string.format('%d', ms + ARGV[2])
"""

# One change: kept in the session's capped stream (for reconnecting readers) and published on the
# channel of the same name as "<stream id> <kind> <message id> <payload>".
_EMIT = """
local function emit(kind, mid, payload)
  if ARGV[4] == '' then return end
  local eid = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 't', kind, 'm', mid, 'd', payload)
  local note = eid .. ' ' .. kind .. ' ' .. mid .. ' ' .. payload
  if ARGV[4] == 's' then redis.call('SPUBLISH', KEYS[4], note) else redis.call('PUBLISH', KEYS[4], note) end
end
"""

# Renew every key of the session (and, on a single Redis, its index entry and create record).
_TOUCH = """
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('PEXPIREAT', KEYS[2], expires)
if m[5] then redis.call('PEXPIREAT', KEYS[3], expires) end
if ARGV[4] ~= '' then redis.call('PEXPIREAT', KEYS[4], expires) end
if KEYS[5] then
  redis.call('ZADD', KEYS[5], now, ARGV[3])
  redis.call('PEXPIREAT', KEYS[5], expires)
  if m[6] and ARGV[6] ~= '' then redis.call('PEXPIREAT', ARGV[6] .. m[6], expires) end
end
"""

# ZADD of a flat {score, member, ...} list to the message set: one call for a batch (a redis.call
# costs more than the member it adds), in slices that stay within what ``unpack`` can spread.
_ZADD_ALL = """
local function zadd_all(added)
  for j = 1, #added, 1000 do
    redis.call('ZADD', KEYS[2], unpack(added, j, math.min(j + 999, #added)))
  end
end
"""

_ONE = """
local found = redis.call('ZRANGE', KEYS[2], ARGV[7], ARGV[7], 'BYSCORE')
local raw = found[1]
if not raw then return {-5} end
"""

_SPLIT = """
local function split(raw)
  local seg, pos = {}, 1
  while true do
    local nl = string.find(raw, '\\n', pos, true)
    if not nl then seg[#seg + 1] = string.sub(raw, pos); return seg end
    seg[#seg + 1] = string.sub(raw, pos, nl - 1)
    pos = nl + 1
  end
end
"""

# A window of the message set. ARGV (from ``at``): mode, a, b, limit.
#   'n' none; 'a' all; 'l' the last a; 'f' ids above a, at most limit; 'i' the message with id a;
#   'b' ids below a and above b, newest first, at most limit (the caller reverses them).
_WINDOW = """
local function window(at)
  local mode, a, b, limit = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  if mode == 'n' then return false end
  if mode == 'a' then return redis.call('ZRANGE', KEYS[2], 0, -1) end
  if mode == 'l' then return redis.call('ZRANGE', KEYS[2], -tonumber(a), -1) end
  if mode == 'i' then return redis.call('ZRANGE', KEYS[2], a, a, 'BYSCORE') end
  if mode == 'f' then return redis.call('ZRANGE', KEYS[2], '(' .. a, '+inf', 'BYSCORE', 'LIMIT', 0, limit) end
  return redis.call('ZRANGE', KEYS[2], '(' .. a, '(' .. b, 'BYSCORE', 'REV', 'LIMIT', 0, limit)
end
"""

# --------------------------------------------------------------------------------- sessions

# KEYS: meta, [index]   ARGV: owner, title, metadata, ttl_ms, session id, create-key digest ('' none)
# Returns now, or nil when the id is taken (never overwrites).
CREATE = LuaScript(
    "create",
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local now = string.format('%d', ms)
local expires = string.format('%d', ms + ARGV[4])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[2], 'metadata', ARGV[3], 'created_at', now,
           'updated_at', now, 'expires_at', expires, 'count', '0', 'seq', '0', 'v', '2')
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'cidem', ARGV[6]) end
redis.call('PEXPIREAT', KEYS[1], expires)
if KEYS[2] then
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  redis.call('PEXPIREAT', KEYS[2], expires)
end
return now
""",
)

# ARGV[7..]: set title ('0'/'1'), title, set metadata ('0'/'1'), metadata
# Returns {pttl, title, metadata, created_at, updated_at, count, expires_at, cidem|false}.
UPDATE = LuaScript(
    "update",
    _SESSION
    + _NOW
    + _EMIT
    + """
if ARGV[7] == '1' then redis.call('HSET', KEYS[1], 'title', ARGV[8]) end
if ARGV[9] == '1' then redis.call('HSET', KEYS[1], 'metadata', ARGV[10]) end
redis.call('HSET', KEYS[1], 'updated_at', now, 'expires_at', expires)
emit('s', '0', '')
"""
    + _TOUCH
    + """
local r = redis.call('HMGET', KEYS[1], 'title', 'metadata', 'created_at', 'updated_at', 'count', 'expires_at')
return {redis.call('PTTL', KEYS[1]), r[1], r[2], r[3], r[4], r[5], r[6], m[6] or false}
""",
)

# KEYS: meta, m, idem, ev, legacy list, [index]   ARGV: owner, session id, event mode, create-key prefix
# Returns {1, cidem|false} when deleted, {0} when not there (or another owner's).
DELETE = LuaScript(
    "delete",
    """
local m = redis.call('HMGET', KEYS[1], 'owner', 'cidem')
if m[1] ~= ARGV[1] then return {0} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
if KEYS[6] then
  redis.call('ZREM', KEYS[6], ARGV[2])
  if m[2] and ARGV[4] ~= '' then redis.call('DEL', ARGV[4] .. m[2]) end
end
local note = '0-0 d 0 '
if ARGV[3] == 's' then redis.call('SPUBLISH', KEYS[4], note) elseif ARGV[3] == 'p' then
  redis.call('PUBLISH', KEYS[4], note)
end
return {1, m[2] or false}
""",
)

# KEYS: meta, m   ARGV: owner, then the window's mode, a, b, limit (see _WINDOW)
# Returns {pttl, title, metadata, created_at, updated_at, count, expires_at, messages|false},
# -9 for a session of layout 1, or nil when not found. A missing session and another owner's take the
# same path, so timing tells them apart no better than the answer does.
READ = LuaScript(
    "read",
    NO_WRITES
    + _WINDOW
    + """
local f = redis.call('HMGET', KEYS[1], 'owner', 'v', 'title', 'metadata', 'created_at', 'updated_at',
                     'count', 'expires_at')
if f[1] ~= ARGV[1] then return false end
if f[2] ~= '2' then return -9 end
if redis.call('ZCARD', KEYS[2]) ~= tonumber(f[7]) then return false end
return {redis.call('PTTL', KEYS[1]), f[3], f[4], f[5], f[6], f[7], f[8], window(2)}
""",
)

# KEYS: meta, m   ARGV: owner, then the window's mode, a, b, limit (see _WINDOW)
# Returns the messages (possibly none), -9 for layout 1, or nil when not found. ``get_messages``: it
# skips what READ also fetches, and compares owners before it reads a message, so another owner's
# session answers exactly like a missing one. Only an empty window needs the count check that tells an
# evicted message set from a short one.
WINDOW = LuaScript(
    "window",
    NO_WRITES
    + _WINDOW
    + """
local f = redis.call('HMGET', KEYS[1], 'owner', 'v', 'count')
if f[1] ~= ARGV[1] then return false end
if f[2] ~= '2' then return -9 end
local r = window(2)
if #r == 0 and redis.call('ZCARD', KEYS[2]) ~= tonumber(f[3]) then return false end
return r
""",
)

# KEYS: meta, m   ARGV: owner, max tokens, include leading system messages ('1'/'0'), bytes of stored
# content per estimated token, most messages to return
# Returns the chosen messages oldest first, -9 for layout 1, or nil when not found: the leading system
# messages, then the newest run of messages whose token counts fit what is left of the budget, never
# opening on a tool message. A message without a token count counts ceil(bytes of its stored content
# / ARGV[4]) tokens.
CONTEXT = LuaScript(
    "context",
    NO_WRITES
    + """
local f = redis.call('HMGET', KEYS[1], 'owner', 'v', 'count')
if f[1] ~= ARGV[1] then return false end
if f[2] ~= '2' then return -9 end
local total = redis.call('ZCARD', KEYS[2])
if total ~= tonumber(f[3]) then return false end
local budget, per, cap = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function tokens(raw)
  -- Plain finds (no pattern scan over the content): the count's digits follow its label directly.
  local t = string.find(raw, '\\n,"token_count":', 1, true)
  if t then
    local n = string.match(raw, '^%d+', t + 16)
    if n then return tonumber(n) end
  end
  local p = string.find(raw, '\\n,"content":', t or 1, true)
  if not p then return math.ceil(#raw / per) end
  return math.max(1, math.ceil((#raw - p - 14) / per))
end
local function role(raw)
  return string.match(raw, '^{"id":%d+,"created_at":%d+,"role":"([^"]*)"')
end
-- Both scans read in chunks that double (1 or 8 first, then up to 64), so a short window or no
-- system block reads little more than it returns.
local out, nsys = {}, 0
if ARGV[3] == '1' then
  local done, size = false, 1
  while not done and nsys < total do
    local chunk = redis.call('ZRANGE', KEYS[2], nsys, nsys + size - 1)
    if #chunk == 0 then break end
    for _, raw in ipairs(chunk) do
      if role(raw) ~= 'system' or #out >= cap then done = true; break end
      out[#out + 1] = raw
      budget = budget - tokens(raw)
      nsys = nsys + 1
    end
    size = math.min(size * 4, 64)
  end
end
local picked, hi, full, size = {}, total - 1, false, 8
while not full and hi >= nsys and budget > 0 do
  local lo = math.max(nsys, hi - size + 1)
  local chunk = redis.call('ZRANGE', KEYS[2], lo, hi)
  for j = #chunk, 1, -1 do
    local cost = tokens(chunk[j])
    if cost > budget or #out + #picked >= cap then full = true; break end
    budget = budget - cost
    picked[#picked + 1] = chunk[j]
  end
  hi = lo - 1
  size = math.min(size * 2, 64)
end
while #picked > 0 and role(picked[#picked]) == 'tool' do picked[#picked] = nil end
for j = #picked, 1, -1 do out[#out + 1] = picked[j] end
return out
""",
)

# KEYS: meta, m, legacy list   ARGV: owner
# Moves a session of layout 1 (messages in a list, id N at index N-1) to layout 2, rewriting each
# message to the segmented shape (see ``codec``) by string surgery: layout 1 wrote the fields in the
# order id, created_at, role, content, sources, and a JSON string cannot hold an unescaped quote, so
# the first ``,"content":`` and ``,"sources":`` are the fields themselves. Returns 1 when the session
# has layout 2 now, 0 when it is not there (or another owner's, or half-evicted).
MIGRATE = LuaScript(
    "migrate",
    """
local f = redis.call('HMGET', KEYS[1], 'owner', 'v', 'count')
if f[1] ~= ARGV[1] then return 0 end
if f[2] == '2' then return 1 end
local n = redis.call('LLEN', KEYS[3])
if n ~= tonumber(f[3]) then return 0 end
local start = 0
while start < n do
  local chunk = redis.call('LRANGE', KEYS[3], start, start + 199)
  local args = {}
  for j, raw in ipairs(chunk) do
    local p = string.find(raw, ',"content":', 1, true)
    local q = string.find(raw, ',"sources":', 1, true)
    if p and q and q > p then
      raw = string.sub(raw, 1, p - 1) .. ',"sources":' .. string.sub(raw, q + 11, -2)
        .. '\\n,"status":"completed"\\n,"token_count":null\\n,"data":{}\\n,"content":'
        .. string.sub(raw, p + 11, q - 1) .. '}'
    end
    args[#args + 1] = start + j
    args[#args + 1] = raw
  end
  if #args > 0 then redis.call('ZADD', KEYS[2], unpack(args)) end
  start = start + 200
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[1], 'v', '2', 'seq', string.format('%d', n))
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 and n > 0 then redis.call('PEXPIRE', KEYS[2], pttl) end
return 1
""",
)

# KEYS: owner index   ARGV: cursor score ('+inf' for the first page), cursor session id ('' none),
# most entries
# Returns up to that many entries after the cursor, newest first, flat {id, score, ...}. When the
# cursor's entry is still in the index with the cursor's score, the page starts at its rank (O(log
# n), however many entries share that score: an import writes thousands within one millisecond);
# otherwise (the session was deleted, or written since) it walks the entries at or below the score,
# skipping those of the cursor's score that sort at or after its id, as the order shows them.
_INDEX_PAGE_FN = """
local function index_page(index, max, after, want)
  if after ~= '' then
    local score = redis.call('ZSCORE', index, after)
    if score and tonumber(score) == tonumber(max) then
      local start = redis.call('ZREVRANK', index, after) + 1
      return redis.call('ZREVRANGE', index, start, start + want - 1, 'WITHSCORES')
    end
  else
    return redis.call('ZREVRANGEBYSCORE', index, max, '-inf', 'WITHSCORES', 'LIMIT', 0, want)
  end
  local top, out, offset = tonumber(max), {}, 0
  while #out < 2 * want do
    local chunk = redis.call('ZREVRANGEBYSCORE', index, max, '-inf', 'WITHSCORES', 'LIMIT', offset, want)
    if #chunk == 0 then break end
    for j = 1, #chunk, 2 do
      if #out < 2 * want and not (tonumber(chunk[j + 1]) == top and chunk[j] >= after) then
        out[#out + 1] = chunk[j]
        out[#out + 1] = chunk[j + 1]
      end
    end
    offset = offset + #chunk / 2
  end
  return out
end
"""

INDEX_PAGE = LuaScript(
    "index_page",
    NO_WRITES
    + _INDEX_PAGE_FN
    + """
return index_page(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))
""",
)


# KEYS: the owner's index   ARGV: owner, max score, after id ('' none), how many sessions, the session
# key head (``<prefix>:s:{``), the most index entries to read
# A listing's next sessions in one call, on a single Redis: it walks the index from the cursor (as
# INDEX_PAGE does, in chunks) and reads each entry's session, skipping on the server the ones gone
# (missing, another owner's, or half-evicted: the message set, or the layout-1 list when meta has no
# ``v``, does not hold ``count`` members), until it has that many sessions and has seen whether a
# live one follows. Index entries that are not session ids are skipped (neither listed nor pruned).
# Returns {flat, gone, more, score, cursor score, cursor id}:
#   flat: 7 values per live session, newest first: id, expires, title, metadata, created_at,
#     updated_at, count; ``expires`` is the stored ``expires_at`` (a string), or the meta key's PTTL
#     (an integer) on layout 1, which did not store it;
#   gone: the ids of the entries read whose session is gone (the caller prunes them);
#   more: 1 when a live session follows the last one returned, 0 when none does, -1 when the entry
#     budget ran out first (call again from the cursor: the last entry read);
#   score: the index score of the last session returned (false for none).
# It reads the sessions' keys without being passed them (the index names them), which only a single
# Redis allows; a cluster lists with INDEX_PAGE and plain commands, one slot per session.
LIST_PAGE = LuaScript(
    "list_page",
    NO_WRITES
    + _INDEX_PAGE_FN
    + """
local index, owner, head = KEYS[1], ARGV[1], ARGV[5]
local max, after, want, budget = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[6])
local out, gone, n, found, read, score = {}, {}, 0, 0, 0, false
local call, find = redis.call, string.find  -- locals: a global lookup per session shows at 20,000
while true do
  local size = math.min(want - found + 1, budget - read)
  if size < 1 then return {out, gone, -1, score, max, after} end
  local entries = index_page(index, max, after, size)
  for j = 1, #entries, 2 do
    local id = entries[j]
    if #id == 22 and not find(id, '[^A-Za-z0-9_%-]') then
      local key = head .. id .. '}:meta'
      local f = call('HMGET', key, 'owner', 'v', 'count', 'title', 'metadata', 'created_at',
                           'updated_at', 'expires_at')
      local live = f[1] == owner
      if live then
        local held
        if f[2] then
          held = call('ZCARD', head .. id .. '}:m')
        else
          held = call('LLEN', head .. id .. '}:msgs')
        end
        live = held == tonumber(f[3])
      end
      if not live then
        gone[#gone + 1] = id
      elseif found == want then
        return {out, gone, 1, score, max, after}
      else
        out[n + 1] = id
        out[n + 2] = f[8] or call('PTTL', key)
        out[n + 3] = f[4] or ''
        out[n + 4] = f[5] or ''
        out[n + 5] = f[6] or '0'
        out[n + 6] = f[7] or '0'
        out[n + 7] = f[3]
        n = n + 7
        found = found + 1
        score = entries[j + 1]
      end
    end
    max, after = entries[j + 1], id
  end
  read = read + #entries / 2
  if #entries < 2 * size then return {out, gone, 0, score, max, after} end
end
""",
)


# --------------------------------------------------------------------------------- messages

# ARGV[7..]: max messages, idempotency key digest ('' none), fingerprint, k, then k message bodies
# (``codec.message_body``: the stored message less its leading ``{"id":N,"created_at":T``), then the
# fingerprint layout 1 gave the same request ('' none), which a retry spanning the migration matches.
# Returns {first id, now, cidem|false} on append; {-4, stored messages} when the idempotency key was
# seen before with these messages (nothing appended); {-1}, {-2}, {-3}, {-6} or {-9} (see the codes).
# The hottest path: few commands, and the idempotency hash is renewed only when the meta hash's
# ``idem`` flag says it exists.
APPEND = LuaScript(
    "append",
    _SESSION
    + _ZADD_ALL
    + """
local k = tonumber(ARGV[10])
if ARGV[8] ~= '' then
  local prior = redis.call('HGET', KEYS[3], ARGV[8])
  if prior then
    local sp = string.find(prior, ' ', 1, true)
    local fp = string.sub(prior, 1, sp - 1)
    if fp ~= ARGV[9] and fp ~= ARGV[11 + k] then return {-3} end
    -- Rewrite the same value: a write changing nothing, so that a WAIT after this replay covers the
    -- first call's append too (REPLICA_ACKS), even when that call's own WAIT timed out.
    redis.call('HSET', KEYS[3], ARGV[8], prior)
    local range = string.sub(prior, sp + 1)
    local dash = string.find(range, '-', 1, true)
    local first, last = range, range
    if dash then first, last = string.sub(range, 1, dash - 1), string.sub(range, dash + 1) end
    local found = redis.call('ZRANGE', KEYS[2], first, last, 'BYSCORE')
    if #found ~= tonumber(last) - tonumber(first) + 1 then return {-6} end
    return {-4, found}
  end
end
if count + k > tonumber(ARGV[7]) then return {-2} end
"""
    + _NOW
    + _EMIT
    + """
local first = string.format('%d', seq + 1)
local added = {}
for i = 1, k do
  local id = string.format('%d', seq + i)
  added[2 * i - 1] = id
  added[2 * i] = '{"id":' .. id .. ',"created_at":' .. now .. ARGV[10 + i]
end
zadd_all(added)
for i = 1, k do emit('c', added[2 * i - 1], added[2 * i]) end
local s, c = string.format('%d', seq + k), string.format('%d', count + k)
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[8], ARGV[9] .. ' ' .. first .. '-' .. s)
  redis.call('HSET', KEYS[1], 'count', c, 'seq', s, 'updated_at', now, 'expires_at', expires, 'idem', '1')
  m[5] = '1'
else
  redis.call('HSET', KEYS[1], 'count', c, 'seq', s, 'updated_at', now, 'expires_at', expires)
end
"""
    + _TOUCH
    + """
return {tonumber(first), now, m[6] or false}
""",
)

# ARGV[7..]: message id, then the new status, token count, data and content segments ('' keeps one)
# Returns {1, the stored message, cidem|false, now}, or {-1}, {-5}, {-7}, {-9}.
UPDATE_MESSAGE = LuaScript(
    "update_message",
    _SESSION
    + _ONE
    + _SPLIT
    + """
local seg = split(raw)
if #seg ~= 5 then return {-7} end
for j = 2, 5 do
  if ARGV[6 + j] ~= '' then seg[j] = ARGV[6 + j] end
end
local new = table.concat(seg, '\\n')
if new ~= raw then
  redis.call('ZREM', KEYS[2], raw)
  redis.call('ZADD', KEYS[2], ARGV[7], new)
end
"""
    + _NOW
    + _EMIT
    + """
redis.call('HSET', KEYS[1], 'updated_at', now, 'expires_at', expires)
emit('u', ARGV[7], new)
"""
    + _TOUCH
    + """
return {1, new, m[6] or false, now}
""",
)

# ARGV[7..]: message id, the text to append (JSON-escaped, without quotes), the most characters the
# content may hold (MAX_MESSAGE_LENGTH), the characters of the text to append
# Returns {1, the stored message, cidem|false, now}, or {-1}, {-5}, {-7}, {-8}, {-9}, {-10}.
EXTEND_MESSAGE = LuaScript(
    "extend_message",
    _SESSION
    + _ONE
    + _SPLIT
    + """
local seg = split(raw)
if #seg ~= 5 then return {-7} end
if seg[2] ~= ',"status":"in_progress"' then return {-8} end
local room = tonumber(ARGV[9]) - tonumber(ARGV[10])
local body = string.sub(seg[5], 13, -3)
-- The limit is in characters, as append checks it in Python. A character is at least one byte of
-- the escaped text, so only a long content needs counting: its code points (bytes that are not
-- UTF-8 continuation bytes), less the extra characters of its JSON escapes (one for an escaped quote,
-- backslash or newline; five for a six-character unicode escape). Removing the escaped backslashes
-- first leaves each other backslash starting an escape.
if #body > room then
  local bs = string.char(92)
  local rest, doubled = string.gsub(body, bs .. bs, '')
  local _, escapes = string.gsub(rest, bs, '')
  local _, unicode = string.gsub(rest, bs .. 'u', '')
  local _, tails = string.gsub(body, '[\\128-\\191]', '')
  if #body - tails - doubled - escapes - 4 * unicode > room then return {-10} end
end
seg[5] = string.sub(seg[5], 1, -3) .. ARGV[8] .. '"}'
local new = table.concat(seg, '\\n')
redis.call('ZREM', KEYS[2], raw)
redis.call('ZADD', KEYS[2], ARGV[7], new)
"""
    + _NOW
    + _EMIT
    + """
redis.call('HSET', KEYS[1], 'updated_at', now, 'expires_at', expires)
emit('x', ARGV[7], ARGV[8])
"""
    + _TOUCH
    + """
return {1, new, m[6] or false, now}
""",
)

# ARGV[7]: message id.  Returns {1, cidem|false, now}, or {-1}, {-5}, {-9}.
DELETE_MESSAGE = LuaScript(
    "delete_message",
    _SESSION
    + """
if redis.call('ZREMRANGEBYSCORE', KEYS[2], ARGV[7], ARGV[7]) == 0 then return {-5} end
"""
    + _NOW
    + _EMIT
    + """
redis.call('HSET', KEYS[1], 'count', string.format('%d', count - 1), 'updated_at', now, 'expires_at', expires)
emit('r', ARGV[7], '')
"""
    + _TOUCH
    + """
return {1, m[6] or false, now}
""",
)

# ARGV[7]: after (remove every message with an id above it).  Returns {removed, cidem|false, now}, or
# {-1}, {-9}.
TRUNCATE = LuaScript(
    "truncate",
    _SESSION
    + """
local n = redis.call('ZREMRANGEBYSCORE', KEYS[2], '(' .. ARGV[7], '+inf')
"""
    + _NOW
    + _EMIT
    + """
redis.call('HSET', KEYS[1], 'count', string.format('%d', count - n), 'updated_at', now, 'expires_at', expires)
if n > 0 then emit('t', ARGV[7], string.format('%d', n)) end
"""
    + _TOUCH
    + """
return {n, m[6] or false, now}
""",
)

# No ARGV of its own.  Returns {1, the removed message, cidem|false, now}, {0} when the session has no
# message (nothing written), or {-1}, {-9}.
POP = LuaScript(
    "pop",
    _SESSION
    + """
local top = redis.call('ZPOPMAX', KEYS[2])
if not top[1] then return {0} end
"""
    + _NOW
    + _EMIT
    + """
redis.call('HSET', KEYS[1], 'count', string.format('%d', count - 1), 'updated_at', now, 'expires_at', expires)
emit('r', top[2], '')
"""
    + _TOUCH
    + """
return {1, top[1], m[6] or false, now}
""",
)

# ARGV[7..]: max messages, k, then k message bodies (as APPEND's; k may be 0)
# Replaces the whole history in one step: removes every message (as TRUNCATE with after=0), then
# appends the k bodies with the next ids (ids keep growing: never reused). A reader sees the old
# history or the new one, never a mix. Returns {first id, removed, now, cidem|false}, or {-1}, {-2},
# {-9}.
REPLACE = LuaScript(
    "replace",
    _SESSION
    + _ZADD_ALL
    + """
local k = tonumber(ARGV[8])
if k > tonumber(ARGV[7]) then return {-2} end
"""
    + _NOW
    + _EMIT
    + """
local n = redis.call('ZREMRANGEBYSCORE', KEYS[2], '(0', '+inf')
if n > 0 then emit('t', '0', string.format('%d', n)) end
local added = {}
for i = 1, k do
  local id = string.format('%d', seq + i)
  added[2 * i - 1] = id
  added[2 * i] = '{"id":' .. id .. ',"created_at":' .. now .. ARGV[8 + i]
end
zadd_all(added)
for i = 1, k do emit('c', added[2 * i - 1], added[2 * i]) end
redis.call('HSET', KEYS[1], 'count', string.format('%d', k), 'seq', string.format('%d', seq + k),
           'updated_at', now, 'expires_at', expires)
"""
    + _TOUCH
    + """
return {seq + 1, n, now, m[6] or false}
""",
)

# KEYS: meta, ev   ARGV: owner, after (a stream id), most entries
# Returns {trimmed, oldest, the session's events after that id ({id, {field, value...}} each, oldest
# first)}, or nil when the session is not there: what a reconnecting reader missed. ``trimmed`` is '0'
# when the stream has kept every entry ever added (XINFO's entries-added, Redis 7+), else '1' (or
# unknown, on 6.2); ``oldest`` is the oldest id still kept ('' for no stream).
EVENTS_SINCE = LuaScript(
    "events_since",
    NO_WRITES
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
local info = redis.pcall('XINFO', 'STREAM', KEYS[2])
local trimmed = '1'
if type(info) == 'table' and not info.err then
  local added, length
  for i = 1, #info - 1, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
    if info[i] == 'length' then length = info[i + 1] end
  end
  if added and added == length then trimmed = '0' end
end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = first[1] and first[1][1] or ''
return {trimmed, oldest, redis.call('XRANGE', KEYS[2], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])}
""",
)

# --------------------------------------------------------------------------------- operator tools

# KEYS: meta, m, [index, mapping]
# ARGV: owner, title, metadata, created_at, updated_at, count, ttl_ms, session id, mapping field,
#       the stored messages (ids 1..count, in order)
# Returns {1} written, {0, id} already imported (mapping has the source), {-1} the id is taken.
IMPORT = LuaScript(
    "import",
    """
if KEYS[4] then
  local prior = redis.call('HGET', KEYS[4], ARGV[9])
  if prior then return {0, prior} end
end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
local t = redis.call('TIME')
local expires = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[7])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[2], 'metadata', ARGV[3],
           'created_at', ARGV[4], 'updated_at', ARGV[5], 'count', ARGV[6], 'seq', ARGV[6], 'v', '2',
           'expires_at', expires)
redis.call('PEXPIREAT', KEYS[1], expires)
local last = #ARGV
local i = 10
while i <= last do
  local args = {}
  local upto = math.min(i + 499, last)
  for j = i, upto do
    args[#args + 1] = j - 9
    args[#args + 1] = ARGV[j]
  end
  redis.call('ZADD', KEYS[2], unpack(args))
  i = upto + 1
end
if last >= 10 then redis.call('PEXPIREAT', KEYS[2], expires) end
if KEYS[3] then
  redis.call('ZADD', KEYS[3], 'GT', ARGV[5], ARGV[8])
  local have = redis.call('PTTL', KEYS[3])
  if have == -1 or have < tonumber(ARGV[7]) then redis.call('PEXPIRE', KEYS[3], ARGV[7]) end
end
if KEYS[4] then redis.call('HSET', KEYS[4], ARGV[9], ARGV[8]) end
return {1}
""",
)

# KEYS: source   ARGV: the value read.  Deletes the source only if nobody changed it since.
DELETE_IF_UNCHANGED = LuaScript(
    "delete_if_unchanged",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
)

# --------------------------------------------------------------------------------- the report
#
# ``conversations_report`` reads a few hundred sessions per call on a single Redis (one per call on
# a cluster, where a script may touch one slot only). Each call holds Redis for about a millisecond
# at most; replies are flat, a fixed number of values per session, the cheapest to parse.

# inspect(meta, m, legacy, out, n, cutoff, cap): one session's 9 values into out[n + 1 .. n + 9]:
# meta pttl, owner (false: no owner field, or the meta key is not a hash), created_at, updated_at,
# count, messages held (-1: the message key has the wrong type, -2: the meta key is not a hash), the
# message key's pttl, layout (1 or 2), stalled replies (in-progress messages of a session idle since
# before ``cutoff``, scanned in sessions of up to ``cap`` messages; -1: too many to scan here, ask
# REPORT_STALLED). Reading a session in one script means a count that disagrees with what is held is
# damage, not an append landing between two reads.
_REPORT_SESSION_FN = """
local function inspect(meta, m, legacy, out, n, cutoff, cap)
  local pttl = redis.call('PTTL', meta)
  local f = redis.pcall('HMGET', meta, 'owner', 'created_at', 'updated_at', 'count', 'v')
  if f.err then
    out[n + 1] = pttl
    for j = 2, 9 do out[n + j] = false end
    out[n + 6] = -2
    return
  end
  local key, layout, held = m, 2, nil
  if f[5] == '2' then
    held = redis.pcall('ZCARD', key)
  else
    key, layout = legacy, 1
    held = redis.pcall('LLEN', key)
  end
  if type(held) == 'table' then held = -1 end
  local stalled, updated = 0, tonumber(f[3])
  if layout == 2 and held > 0 and updated and updated < cutoff then
    if held <= cap then
      for _, raw in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        if string.find(raw, '\\n,"status":"in_progress"\\n', 1, true) then stalled = stalled + 1 end
      end
    else
      stalled = -1
    end
  end
  out[n + 1] = pttl
  out[n + 2] = f[1] or false
  out[n + 3] = f[2] or false
  out[n + 4] = f[3] or false
  out[n + 5] = f[4] or false
  out[n + 6] = held
  out[n + 7] = redis.call('PTTL', key)
  out[n + 8] = layout
  out[n + 9] = stalled
end
"""

# KEYS: meta, m (messages), legacy list of each session in turn
# ARGV: stall cutoff (ms), the most messages of one session scanned here for stalled replies
# 9 values per session (``inspect`` above). The cluster's call: one session (one slot) per call.
REPORT_INSPECT = LuaScript(
    "report_inspect",
    NO_WRITES
    + _REPORT_SESSION_FN
    + """
local out = {}
local cutoff, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, #KEYS, 3 do
  inspect(KEYS[i], KEYS[i + 1], KEYS[i + 2], out, (i - 1) / 3 * 9, cutoff, cap)
end
return out
""",
)

# ARGV: SCAN cursor, the meta key pattern, SCAN COUNT, stall cutoff (ms), the most messages of one
# session scanned here for stalled replies
# One step of the report's walk on a single Redis: a SCAN of the meta keys, then ``inspect`` of each
# key it found (its message keys derived from the meta key's name, which only a single Redis allows:
# they are not passed in KEYS). Flat: the next cursor, then 10 values per key found: the key and its
# 9 values. SCAN COUNT bounds the work of a call, as it bounds a plain SCAN's.
REPORT_SCAN = LuaScript(
    "report_scan",
    NO_WRITES
    + _REPORT_SESSION_FN
    + """
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local out, n = {found[1]}, 1
local cutoff, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
for _, meta in ipairs(found[2]) do
  local head = string.sub(meta, 1, -5)
  out[n + 1] = meta
  inspect(meta, head .. 'm', head .. 'msgs', out, n + 1, cutoff, cap)
  n = n + 10
end
return out
""",
)

# ARGV: the session key head (``<prefix>:s:{``), '1' to take MEMORY USAGE of sampled sessions ('0'
# not), then 4 per session: its owner's index, its id, '1' if it is sampled ('0' if not), its layout
# The report's second look at a batch of sessions on a single Redis, in one call: first each
# session's score in its owner's index (false: missing), then 3 values per sampled session: the
# MEMORY USAGE of its keys summed (false without memory), its first and its last message (false:
# none), from the message set, or the layout-1 list. The sessions' keys are derived from their ids,
# which only a single Redis allows.
REPORT_CHECK = LuaScript(
    "report_check",
    NO_WRITES
    + """
local head, memory = ARGV[1], ARGV[2] == '1'
local out, n = {}, 0
for i = 3, #ARGV, 4 do
  local score = redis.pcall('ZSCORE', ARGV[i], ARGV[i + 1])
  if type(score) == 'table' then score = false end
  n = n + 1
  out[n] = score
end
for i = 3, #ARGV, 4 do
  if ARGV[i + 2] == '1' then
    local base = head .. ARGV[i + 1] .. '}:'
    local list = ARGV[i + 3] ~= '2'
    local messages = base .. (list and 'msgs' or 'm')
    out[n + 1] = false
    if memory then
      local bytes = 0
      for _, key in ipairs({base .. 'meta', messages, base .. 'idem', base .. 'ev'}) do
        bytes = bytes + (redis.call('MEMORY', 'USAGE', key) or 0)
      end
      out[n + 1] = bytes
    end
    local first, last
    if list then
      first, last = redis.pcall('LINDEX', messages, 0), redis.pcall('LINDEX', messages, -1)
    else
      first, last = redis.pcall('ZRANGE', messages, 0, 0), redis.pcall('ZRANGE', messages, -1, -1)
      first, last = not first.err and first[1], not last.err and last[1]
    end
    if type(first) ~= 'string' then first = false end
    if type(last) ~= 'string' then last = false end
    out[n + 2], out[n + 3] = first, last
    n = n + 3
  end
end
return out
""",
)

# KEYS: a session's message set   ARGV: first rank, last rank
# Returns how many of those messages are in progress (the report's stalled replies, for a session
# too large for REPORT_INSPECT to scan in one go).
REPORT_STALLED = LuaScript(
    "report_stalled",
    NO_WRITES
    + """
local stalled = 0
for _, raw in ipairs(redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2])) do
  if string.find(raw, '\\n,"status":"in_progress"\\n', 1, true) then stalled = stalled + 1 end
end
return stalled
""",
)

# KEYS: an owner index per session   ARGV: the session ids.  One reply each: the score, or false.
REPORT_INDEX_SCORES = LuaScript(
    "report_index_scores",
    NO_WRITES
    + """
local out = {}
for i = 1, #KEYS do
  local score = redis.pcall('ZSCORE', KEYS[i], ARGV[i])
  if type(score) == 'table' then score = false end
  out[i] = score
end
return out
""",
)

# KEYS: meta keys.  One reply each: the owner field, or false (no such hash, or not a hash).
REPORT_OWNERS = LuaScript(
    "report_owners",
    NO_WRITES
    + """
local out = {}
for i = 1, #KEYS do
  local owner = redis.pcall('HGET', KEYS[i], 'owner')
  if type(owner) == 'table' then owner = false end
  out[i] = owner
end
return out
""",
)

# ARGV: SCAN cursor, the owner index pattern, SCAN COUNT, '1' to take MEMORY USAGE ('0' not), the
# largest index read here, the most entries read in one call, the session key head (``<prefix>:s:{``)
# One step of the report's walk over the owner indexes on a single Redis: a SCAN, then for each
# sorted set found: its key, its size, its MEMORY USAGE (false without memory), and its entries as a
# flat list of (session id, score, that session's owner field or false), or false when the index is
# larger than asked or the call has read its share of entries (the caller reads those itself).
# Flat: the next cursor, then 4 values per index. Keys that are not sorted sets, or are empty, are
# skipped. The sessions' meta keys are derived from the entries, which only a single Redis allows.
REPORT_INDEXES = LuaScript(
    "report_indexes",
    NO_WRITES
    + """
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local memory, largest, budget, head = ARGV[4] == '1', tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local out, n = {found[1]}, 1
for _, index in ipairs(found[2]) do
  local size = redis.pcall('ZCARD', index)
  if type(size) == 'number' and size > 0 then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = index, size, false, false
    if memory then out[n + 3] = redis.call('MEMORY', 'USAGE', index) or 0 end
    if size <= largest and size <= budget then
      budget = budget - size
      local entries, rows = redis.call('ZRANGE', index, 0, -1, 'WITHSCORES'), {}
      for j = 1, #entries, 2 do
        local owner = redis.pcall('HGET', head .. entries[j] .. '}:meta', 'owner')
        if type(owner) ~= 'string' then owner = false end
        rows[#rows + 1], rows[#rows + 2], rows[#rows + 3] = entries[j], entries[j + 1], owner
      end
      out[n + 4] = rows
    end
    n = n + 4
  end
end
return out
""",
)

# KEYS: owner index   ARGV: score, session id, session pttl (ms, -1 for none)
# Adds a missing index entry without ever lowering a newer score written meanwhile (ZADD GT), and
# gives the index at least the session's remaining TTL (an index created here would have none).
REPORT_REPAIR_MISSING = LuaScript(
    "report_repair_missing",
    """
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
local want = tonumber(ARGV[3])
if want > 0 then
  local have = redis.call('PTTL', KEYS[1])
  if have == -1 or have < want then redis.call('PEXPIRE', KEYS[1], want) end
end
return 1
""",
)

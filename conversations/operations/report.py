"""``conversations_report``: what is in Redis now, computed in one streaming pass.

How it reads Redis (safe on a production server with millions of keys):

1. ``SCAN MATCH <prefix>:s:*:meta COUNT 1000``. For each reply, a Lua script reads every session's
   ``HMGET owner created_at updated_at count``, ``PTTL`` of the meta hash, ``LLEN`` and ``PTTL`` of
   its message list. It reads each session atomically, so a count that disagrees with the list's
   length is damage, not an append landing between two reads.
2. For the sessions that pass the filters, another script asks ``ZSCORE`` of each in its owner's
   index (drift); and for one session in ``memory_sample_every``, ``MEMORY USAGE`` of its keys and its
   first and last message (``LINDEX``), checked for shape. The memory total is the sampled sessions'
   bytes scaled up to all sessions; the largest sessions' memory is measured exactly at the end.
3. A session missing from its index is read again before being reported, so a create or delete
   landing between two reads is not called drift.
4. ``SCAN MATCH <prefix>:o:*:sessions``, then the entries of each owner index (``ZRANGE`` for small
   ones, ``ZSCAN`` for large ones): an entry whose session is gone, or is another owner's, is stale.

The scripts loop over up to ``GROUPS_PER_CALL`` sessions per call on a single Redis, so each call
holds the server for well under a millisecond and the client parses one reply instead of hundreds.
On a Redis Cluster, where one script may only touch one hash slot, each is called once per session
(in a pipeline).

What it keeps: counters, ``Distribution`` histograms, a heap of the ``top`` largest sessions, a
``HeavyHitters`` table of owners (``owner_capacity`` entries) and at most ``EXAMPLES`` example keys per
kind of problem. Nothing grows with the number of sessions.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conversations.store import ConversationStore
from conversations.store.codec import message_problem
from conversations.store.keys import SESSION_ID_RE, KeyLayout
from conversations.store.topology import CLUSTER_INDEX_GRACE_MS

from .memory import eviction_warnings
from .scanning import Progress, parse_int, redis_errors, scan_batches, server_time_ms, text
from .stats import Distribution, HeavyHitters, TopN

#: The keys of one session (meta, messages, idempotency, events): MEMORY USAGE of each is sampled.
_SESSION_KEY_KINDS = ("meta", "messages", "idem", "events")
#: Example keys kept per kind of problem.
EXAMPLES = 10
#: Sessions (or index entries) one script call looks at, on a single Redis.
GROUPS_PER_CALL = 100
#: Owner indexes up to this size are read whole with ZRANGE; larger ones with ZSCAN.
_SMALL_INDEX = 1000
#: On a Redis Cluster a create adds the index entry before the session: entries younger than this
#: may be a create in flight, not drift.

# Kinds of corruption the report counts.
WRONG_TYPE = "wrong_type"  # the meta key is not a hash, or the message key not a list
BAD_KEY = "bad_key"  # a key matching the session pattern whose id is not a session id
BAD_META = "bad_meta"  # the meta hash lacks a field, or a number field is not an integer
COUNT_MISMATCH = "count_mismatch"  # meta "count" differs from the message list's length
BAD_MESSAGE = "bad_message"  # a sampled message is not valid JSON of the stored shape
NO_EXPIRY = "no_expiry"  # a key of the session has no TTL: it would never expire

# KEYS: meta, messages, layout-1 message list of each session in turn.  One reply per session:
#   {pttl} when the meta key is not a hash, else
#   {pttl, owner, created_at, updated_at, count, messages held (-1: wrong type), messages pttl}
_INSPECT = """
local out = {}
for i = 1, #KEYS, 3 do
  local pttl = redis.call('PTTL', KEYS[i])
  local m = redis.pcall('HMGET', KEYS[i], 'owner', 'created_at', 'updated_at', 'count', 'v')
  if m.err then
    out[#out + 1] = {pttl}
  else
    local key = KEYS[i + 1]
    local n
    if m[5] == '2' then n = redis.pcall('ZCARD', key) else key = KEYS[i + 2]; n = redis.pcall('LLEN', key) end
    if type(n) == 'table' then n = -1 end
    out[#out + 1] = {pttl, m[1], m[2], m[3], m[4], n, redis.call('PTTL', key)}
  end
end
return out
"""

# KEYS: an owner index per session   ARGV: the session ids.  One reply each: the score, or false.
_INDEX_SCORES = """
local out = {}
for i = 1, #KEYS do
  local score = redis.pcall('ZSCORE', KEYS[i], ARGV[i])
  if type(score) == 'table' then score = false end
  out[i] = score
end
return out
"""

# KEYS: meta keys.  One reply each: the owner field, or false (no such hash, or not a hash).
_OWNERS = """
local out = {}
for i = 1, #KEYS do
  local owner = redis.pcall('HGET', KEYS[i], 'owner')
  if type(owner) == 'table' then owner = false end
  out[i] = owner
end
return out
"""

# Adds a missing index entry without ever lowering a newer score written meanwhile (ZADD GT), and
# gives the index at least the session's remaining TTL (an index created here would have none).
# KEYS: owner index   ARGV: score, session id, session pttl (ms, -1 for none)
_REPAIR_MISSING = """
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
local want = tonumber(ARGV[3])
if want > 0 then
  local have = redis.call('PTTL', KEYS[1])
  if have == -1 or have < want then redis.call('PEXPIRE', KEYS[1], want) end
end
return 1
"""


@dataclass(frozen=True)
class ReportOptions:
    owner: str | None = None  # only this owner's sessions (None: every owner)
    idle_longer_than: int | None = None  # seconds; only sessions idle longer than this
    top: int = 10
    memory_sample_every: int = 10  # MEMORY USAGE on 1 session in N; 0 turns memory figures off
    repair: bool = False
    owner_capacity: int = 5000
    scan_count: int = 1000


@dataclass
class _Problems:
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)
    _per_kind: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, key: str, detail: str) -> None:
        self.counts[kind] += 1
        if self._per_kind[kind] < EXAMPLES:
            self._per_kind[kind] += 1
            self.examples.append({"kind": kind, "key": key, "detail": detail})


@dataclass
class _Candidate:
    """One session that passed the filters, between the first and the second look."""

    session_id: str
    owner: str
    created_at: int
    updated_at: int
    length: int
    pttl: int
    index: str = ""


class ReportBuilder:
    """Accumulates the report while the sessions stream past. ``run()`` does the whole thing."""

    def __init__(
        self, store: ConversationStore, options: ReportOptions, progress: Progress | None = None
    ) -> None:
        self.store = store
        self.client = store.client
        self.keys: KeyLayout = store.keys
        self.options = options
        self.progress = progress
        self.now_ms = 0
        self.scanned_keys = 0
        self.sessions = 0
        self.messages = Distribution()
        self.age = Distribution()
        self.idle = Distribution()
        self.ttl = Distribution()
        self.largest: TopN[str] = TopN(options.top)
        self.owners: HeavyHitters[str] = HeavyHitters(options.owner_capacity)
        self.problems = _Problems()
        self.memory_enabled = options.memory_sample_every > 0
        self.memory_error: str | None = None
        self.memory_sampled = 0
        self.memory_sampled_bytes = 0
        self.index_keys = 0
        self.index_entries = 0
        self.index_bytes = 0
        self.missing_from_index = 0
        self.stale_index_entries = 0
        self.drift_examples: list[dict[str, str]] = []
        self.repaired_missing = 0
        self.repaired_stale = 0
        self._seen_matching = 0
        # Index entries waiting to be checked: (index, owner tag, session id), at most ~2 x scan_count.
        self._pending_entries: list[tuple[str, str, str]] = []
        self._inspect = self.client.register_script(_INSPECT)
        self._index_scores = self.client.register_script(_INDEX_SCORES)
        self._owners = self.client.register_script(_OWNERS)
        self._repair_missing = self.client.register_script(_REPAIR_MISSING)

    # ------------------------------------------------------------------ the pass

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        with redis_errors():
            self.now_ms = server_time_ms(self.client)
            callback = self.progress.update if self.progress is not None else None
            for batch in scan_batches(
                self.client, self.keys.meta_pattern(), count=self.options.scan_count, progress=callback
            ):
                self._session_batch(batch)
                if self.progress is not None:
                    self.progress.update(items=self.sessions)
            self._check_indexes()
            largest = self._largest_sessions()
        if self.progress is not None:
            self.progress.finish()
        return self._result(largest, time.monotonic() - started)

    def _queue_grouped(
        self, pipe: Any, script: Any, keys: Sequence[str], args: Sequence[Any], width: int
    ) -> int:
        """Queue ``script`` over groups of ``width`` keys (and one arg per group when ``args``);
        returns how many calls were queued. The replies, flattened, give one item per group."""
        per_call = 1 if self.store.topology.cluster else GROUPS_PER_CALL
        groups = len(keys) // width
        calls = 0
        for start in range(0, groups, per_call):
            stop = min(start + per_call, groups)
            call_keys, call_args = keys[start * width : stop * width], args[start:stop]
            if self.store.topology.cluster:
                # redis-py's cluster pipeline refuses EVALSHA (it cannot load a script on the right
                # node mid-pipeline) but routes EVAL by its keys' slot: send the source instead.
                pipe.execute_command("EVAL", script.script, len(call_keys), *call_keys, *call_args)
            else:
                script(keys=call_keys, args=call_args, client=pipe)
            calls += 1
        return calls

    @staticmethod
    def _flatten(replies: list[Any]) -> list[Any]:
        flat: list[Any] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            flat.extend(reply)
        return flat

    def _session_batch(self, batch: list[Any]) -> None:
        self.scanned_keys += len(batch)
        entries: list[tuple[str, str]] = []
        keys: list[str] = []
        for raw_key in batch:
            key = text(raw_key)
            session_id = self.keys.session_id_from_key(key)
            if session_id is None or key != self.keys.meta(session_id):
                self.problems.add(BAD_KEY, key, "not a session key of this layout")
                continue
            entries.append((key, session_id))
            keys += (key, self.keys.messages(session_id), self.keys.legacy_messages(session_id))
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        self._queue_grouped(pipe, self._inspect, keys, (), 3)
        replies = self._flatten(pipe.execute(raise_on_error=False))
        candidates: list[_Candidate] = []
        for (key, session_id), reply in zip(entries, replies, strict=True):
            candidate = self._first_look(key, session_id, reply)
            if candidate is not None:
                candidates.append(candidate)
        if candidates:
            self._second_look(candidates)

    def _first_look(self, key: str, session_id: str, reply: list[Any]) -> _Candidate | None:
        pttl = int(reply[0])
        if pttl == -2:
            return None  # expired or deleted since SCAN saw it
        if len(reply) == 1:
            self.problems.add(WRONG_TYPE, key, "the meta key is not a hash")
            return None
        owner_raw, created_raw, updated_raw, count_raw, length, messages_pttl = reply[1:7]
        if owner_raw is None:
            self.problems.add(BAD_META, key, "no 'owner' field")
            return None
        owner = text(owner_raw)
        if self.options.owner is not None and owner != self.options.owner:
            return None
        numbers = (parse_int(created_raw), parse_int(updated_raw), parse_int(count_raw))
        for name, value in zip(("created_at", "updated_at", "count"), numbers, strict=True):
            if value is None or value < 0:
                self.problems.add(BAD_META, key, f"'{name}' is missing or not a non-negative integer")
                return None
        created_at, updated_at, count = (int(value or 0) for value in numbers)
        if length < 0:
            self.problems.add(
                WRONG_TYPE, self.keys.messages(session_id), "the message key has the wrong type"
            )
            return None
        idle_ms = self.now_ms - updated_at
        if self.options.idle_longer_than is not None and idle_ms <= self.options.idle_longer_than * 1000:
            return None
        if pttl == -1 or (messages_pttl == -1 and length > 0):
            self.problems.add(NO_EXPIRY, key, "the session has no TTL and would never expire")
        if count != length:
            self.problems.add(COUNT_MISMATCH, key, f"count says {count} messages, Redis holds {length}")
        return _Candidate(session_id, owner, created_at, updated_at, int(length), pttl)

    def _second_look(self, candidates: list[_Candidate]) -> None:
        every = self.options.memory_sample_every
        for candidate in candidates:
            candidate.index = self._owner_index(candidate.owner)
        pipe = self.client.pipeline(transaction=False)
        calls = self._queue_grouped(
            pipe, self._index_scores, [c.index for c in candidates], [c.session_id for c in candidates], 1
        )
        sampled: list[_Candidate] = []
        for candidate in candidates:
            self._seen_matching += 1
            if self.memory_enabled and (self._seen_matching - 1) % every == 0:
                sampled.append(candidate)
                for key in self.keys.session_keys(candidate.session_id):
                    pipe.memory_usage(key)
                messages_key = self.keys.messages(candidate.session_id)
                pipe.zrange(messages_key, 0, 0)
                pipe.zrange(messages_key, -1, -1)
        replies = pipe.execute(raise_on_error=False)
        scores = self._flatten(replies[:calls])
        width = len(_SESSION_KEY_KINDS) + 2
        for i, candidate in enumerate(sampled):
            at = calls + width * i
            memory = replies[at : at + width - 2]
            first, last = (
                (reply[0] if isinstance(reply, list) and reply else None)
                for reply in replies[at + width - 2 : at + width]
            )
            self._sample(candidate, memory, first, last)
        missing = [c for c, score in zip(candidates, scores, strict=True) if score is None]
        for candidate in candidates:
            self._count(candidate)
        if missing:
            self._recheck(missing)

    def _owner_index(self, owner: str) -> str:
        return self.keys.owner_index(owner)  # KeyLayout caches the owner's digest

    def _sample(self, candidate: _Candidate, memory: list[Any], first: Any, last: Any) -> None:
        if self.memory_enabled:
            errors = [reply for reply in memory if isinstance(reply, Exception)]
            if errors:
                # Some managed Redis services refuse MEMORY: report the figures as unavailable.
                self.memory_enabled = False
                self.memory_error = str(errors[0])
            else:
                self.memory_sampled += 1
                self.memory_sampled_bytes += sum(int(reply or 0) for reply in memory)
        if candidate.length:
            for raw in (first, last):
                problem = message_problem(None if isinstance(raw, Exception) else raw)
                if problem is not None:
                    self.problems.add(BAD_MESSAGE, self.keys.messages(candidate.session_id), problem)
                    break

    def _count(self, candidate: _Candidate) -> None:
        self.sessions += 1
        messages = candidate.length
        self.messages.add(messages)
        self.age.add(self.now_ms - candidate.created_at)
        idle_ms = self.now_ms - candidate.updated_at
        self.idle.add(idle_ms)
        if candidate.pttl >= 0:
            self.ttl.add(candidate.pttl)
        self.largest.add(messages, candidate.session_id, (candidate.owner, idle_ms))
        self.owners.add(candidate.owner)

    def _recheck(self, missing: list[_Candidate]) -> None:
        # Read again what looked missing from its index: a session created or deleted between the
        # two looks must not be reported as drift.
        pipe = self.client.pipeline(transaction=False)
        for candidate in missing:
            pipe.exists(self.keys.meta(candidate.session_id))
            pipe.zscore(candidate.index, candidate.session_id)
        replies = pipe.execute(raise_on_error=False)
        for i, candidate in enumerate(missing):
            exists, score = replies[2 * i], replies[2 * i + 1]
            if exists != 1 or score is not None:
                continue
            self.missing_from_index += 1
            self._drift_example("missing", candidate.index, candidate.session_id)
            if self.options.repair:
                self._repair_missing(
                    keys=[candidate.index], args=[candidate.updated_at, candidate.session_id, candidate.pttl]
                )
                self.repaired_missing += 1

    def _drift_example(self, kind: str, index: str, session_id: str) -> None:
        if len(self.drift_examples) < 2 * EXAMPLES:
            self.drift_examples.append({"kind": kind, "index": index, "session_id": session_id})

    # ------------------------------------------------------------------ owner indexes

    def _check_indexes(self) -> None:
        if self.options.owner is not None:
            self._index_batch([self.keys.owner_index(self.options.owner)])
        else:
            for batch in scan_batches(self.client, self.keys.index_pattern(), count=self.options.scan_count):
                self._index_batch([text(key) for key in batch])
        self._flush_entries()

    def _index_batch(self, indexes: list[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for index in indexes:
            pipe.zcard(index)
            if self.memory_enabled:
                pipe.memory_usage(index)
        replies = pipe.execute(raise_on_error=False)
        width = 2 if self.memory_enabled else 1
        sizes: list[tuple[str, int]] = []
        for i, index in enumerate(indexes):
            size = replies[width * i]
            if isinstance(size, Exception) or not size:
                continue  # not a sorted set, or gone
            sizes.append((index, int(size)))
            if self.memory_enabled:
                memory = replies[width * i + 1]
                if isinstance(memory, Exception):
                    self.memory_enabled = False
                    self.memory_error = str(memory)
                else:
                    self.index_bytes += int(memory or 0)
        self.index_keys += len(sizes)
        small = [index for index, size in sizes if size <= _SMALL_INDEX]
        if small:
            pipe = self.client.pipeline(transaction=False)
            for index in small:
                pipe.zrange(index, 0, -1, withscores=True)
            for index, members in zip(small, pipe.execute(raise_on_error=False), strict=True):
                if not isinstance(members, Exception):
                    self._add_entries(index, members)
        for index, size in sizes:
            if size > _SMALL_INDEX:
                chunk: list[tuple[Any, float]] = []
                for member in self.client.zscan_iter(index, count=self.options.scan_count):
                    chunk.append(member)
                    if len(chunk) >= self.options.scan_count:
                        self._add_entries(index, chunk)
                        chunk = []
                self._add_entries(index, chunk)

    def _add_entries(self, index: str, members: list[tuple[Any, float]]) -> None:
        tag = index[index.find("{") + 1 : index.find("}")]
        idle = self.options.idle_longer_than
        horizon = self.now_ms - CLUSTER_INDEX_GRACE_MS if self.store.topology.cluster else None
        self.index_entries += len(members)
        for raw_member, raw_score in members:
            score = int(raw_score)
            if idle is not None and self.now_ms - score <= idle * 1000:
                continue
            if horizon is not None and score > horizon:
                continue
            self._pending_entries.append((index, tag, text(raw_member)))
        if len(self._pending_entries) >= self.options.scan_count:
            self._flush_entries()

    def _flush_entries(self) -> None:
        entries, self._pending_entries = self._pending_entries, []
        checked = [entry for entry in entries if SESSION_ID_RE.match(entry[2])]
        stale = [entry for entry in entries if not SESSION_ID_RE.match(entry[2])]
        if checked:
            pipe = self.client.pipeline(transaction=False)
            self._queue_grouped(pipe, self._owners, [self.keys.meta(sid) for _, _, sid in checked], (), 1)
            owners = self._flatten(pipe.execute(raise_on_error=False))
            for entry, owner in zip(checked, owners, strict=True):
                if owner is None or KeyLayout.owner_tag(text(owner)) != entry[1]:
                    stale.append(entry)
        if not stale:
            return
        self.stale_index_entries += len(stale)
        by_index: defaultdict[str, list[str]] = defaultdict(list)
        for index, _tag, session_id in stale:
            self._drift_example("stale", index, session_id)
            by_index[index].append(session_id)
        if self.options.repair:
            # On a single Redis a session and its index entry are written by one script, so an entry
            # without its session stays stale: removing it cannot hide a session.
            pipe = self.client.pipeline(transaction=False)
            for index, members in by_index.items():
                pipe.zrem(index, *members)
            self.repaired_stale += sum(int(n) for n in pipe.execute())

    # ------------------------------------------------------------------ the result

    def _largest_sessions(self) -> list[dict[str, Any]]:
        ranked = self.largest.largest()
        memory: list[int | None] = [None] * len(ranked)
        if self.memory_enabled and ranked:
            pipe = self.client.pipeline(transaction=False)
            for _, session_id, _payload in ranked:
                for key in self.keys.session_keys(session_id):
                    pipe.memory_usage(key)
            replies = pipe.execute(raise_on_error=False)
            for i in range(len(ranked)):
                parts = replies[3 * i : 3 * i + 3]
                if not any(isinstance(part, Exception) for part in parts):
                    memory[i] = sum(int(part or 0) for part in parts)
        return [
            {
                "id": session_id,
                "owner": payload[0] or None,
                "messages": messages,
                "memory_bytes": memory[i],
                "idle_seconds": round(payload[1] / 1000, 3),
            }
            for i, (messages, session_id, payload) in enumerate(ranked)
        ]

    def _result(self, largest: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
        options = self.options
        estimated = None
        mean_bytes = None
        if self.memory_sampled:
            mean_bytes = self.memory_sampled_bytes / self.memory_sampled
            estimated = round(mean_bytes * self.sessions)
        return {
            "generated_at": datetime.fromtimestamp(self.now_ms / 1000, tz=UTC).isoformat(),
            "key_prefix": self.keys.prefix,
            "filters": {"owner": options.owner, "idle_longer_than_seconds": options.idle_longer_than},
            "warnings": eviction_warnings(self.client),
            "scanned_keys": self.scanned_keys,
            "sessions": self.sessions,
            "messages": self.messages.total,
            "messages_per_session": self.messages.summary(),
            "age_seconds": self.age.summary(1000),
            "idle_seconds": self.idle.summary(1000),
            "ttl_seconds": self.ttl.summary(1000),
            "memory": {
                "available": self.memory_error is None and options.memory_sample_every > 0,
                "error": self.memory_error,
                "sample_every": options.memory_sample_every,
                "sampled_sessions": self.memory_sampled,
                "sampled_bytes": self.memory_sampled_bytes,
                "mean_session_bytes": None if mean_bytes is None else round(mean_bytes),
                "estimated_sessions_bytes": estimated,
                "index_bytes": self.index_bytes if self.memory_error is None else None,
            },
            "largest_sessions": largest,
            "top_owners": {
                "exact": self.owners.exact,
                "capacity": self.owners.capacity,
                "owners": [
                    {"owner": owner or None, "sessions": count, "max_overcount": error}
                    for owner, count, error in self.owners.most_common(options.top)
                ],
            },
            "corrupt": {
                "total": sum(self.problems.counts.values()),
                "by_kind": dict(sorted(self.problems.counts.items())),
                "examples": self.problems.examples,
            },
            "index_drift": {
                "owner_indexes": self.index_keys,
                "index_entries": self.index_entries,
                "stale_entries": self.stale_index_entries,
                "missing_entries": self.missing_from_index,
                "repair": options.repair,
                "repaired_stale": self.repaired_stale,
                "repaired_missing": self.repaired_missing,
                "examples": self.drift_examples,
            },
            "elapsed_seconds": round(elapsed, 3),
        }


def build_report(
    store: ConversationStore, options: ReportOptions, progress: Progress | None = None
) -> dict[str, Any]:
    """Scan the store's keys once and return the report as plain JSON-ready data."""
    return ReportBuilder(store, options, progress).run()

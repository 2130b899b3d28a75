"""``conversations_report``: what is in Redis now, computed in one streaming pass.

How it reads Redis (safe on a production server with millions of keys):

1. ``SCAN MATCH <prefix>:s:*:meta``, and for each key found every session's ``HMGET owner created_at
   updated_at count v``, ``PTTL`` of the meta hash, the messages held (``ZCARD`` of the message set,
   or ``LLEN`` of the layout-1 list when meta has no ``v``) and their key's ``PTTL``, and the
   in-progress messages of sessions idle longer than ``stalled_after`` (stalled replies; a session of
   more than ``STALL_SCAN_INLINE`` messages is counted by calls of its own). It reads each session
   atomically, so a count that disagrees with what is held is damage, not an append landing between
   two reads. On a single Redis the SCAN and the reads are one script (``REPORT_SCAN``, SCAN COUNT
   ``SCAN_IN_SCRIPT`` a call); on a Redis Cluster ``REPORT_INSPECT`` reads one session (one slot) a
   call after a plain SCAN.
2. For the sessions that pass the filters, ``ZSCORE`` of each in its owner's index (drift); and for
   one session in ``memory_sample_every``, ``MEMORY USAGE`` of its keys and its first and last
   message (from the set, or the layout-1 list), checked with ``codec.message_problem``: one
   ``REPORT_CHECK`` call a batch on a single Redis, ``REPORT_INDEX_SCORES`` and plain commands on a
   Cluster. The memory total is the sampled sessions' bytes scaled up to all sessions; the largest
   sessions' memory is measured exactly at the end.
3. A session missing from its index is read again before being reported, so a create or delete
   landing between two reads is not called drift.
4. ``SCAN MATCH <prefix>:o:*:sessions``, then the entries of each owner index (whole when small, by
   ``ZSCAN`` when large) and the owner of each entry's session: an entry whose session is gone, or is
   another owner's, is stale. On a single Redis one script (``REPORT_INDEXES``) does the SCAN and
   reads up to ``ENTRIES_PER_CALL`` entries with their sessions' owners a call.

Every script is in the store's registry (``conversations.store.scripts``) and runs through the
store's transport; each holds Redis for a millisecond or two at most. Their replies are flat (a fixed
number of values per session), read without building an object per session. On a single Redis the
walks run one call ahead (``scanning.prefetched``) and the second look of a batch is counted while
the next batch is read, so Redis and the client work side by side rather than in turn.

What it keeps: counters, ``Distribution`` histograms, a heap of the ``top`` largest sessions, a
``HeavyHitters`` table of owners (``owner_capacity`` entries), at most ``EXAMPLES`` example keys per
kind of problem, and at most two batches read ahead. Nothing grows with the number of sessions.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from conversations.store import ConversationStore, scripts
from conversations.store.codec import message_problem
from conversations.store.keys import SESSION_ID_RE, KeyLayout
from conversations.store.protocol import Commands
from conversations.store.scripts import LuaScript
from conversations.store.topology import CLUSTER_INDEX_GRACE_MS

from .memory import eviction_warnings
from .scanning import Progress, parse_int, prefetched, redis_errors, scan_batches, server_time_ms, text
from .stats import Distribution, HeavyHitters, TopN

#: The keys of one session (meta, messages, idempotency, events): MEMORY USAGE of each is sampled.
_SESSION_KEY_KINDS = ("meta", "messages", "idem", "events")
#: Example keys kept per kind of problem.
EXAMPLES = 10
#: Sessions (or index entries) one script call looks at, on a single Redis: about a millisecond of
#: Redis per call (10-message sessions), few enough calls that their overhead stays small.
GROUPS_PER_CALL = 400
#: SCAN COUNT of one ``REPORT_SCAN`` call (single Redis): with a session's 2-4 keys, a few hundred
#: sessions a call, a few milliseconds of Redis.
SCAN_IN_SCRIPT = 300
#: Index entries one ``REPORT_INDEXES`` call checks at most (single Redis): a millisecond or two.
ENTRIES_PER_CALL = 2000
#: A session of more messages than this has its in-progress messages counted by calls of its own,
#: this many messages each, so that no call holds Redis long.
STALL_SCAN_INLINE = 200
STALL_SCAN_CHUNK = 5000
#: The default of ``ReportOptions.stalled_after``: a reply still in progress after 10 minutes of
#: silence was most likely abandoned by a crashed or cancelled writer.
DEFAULT_STALLED_AFTER = 600
#: Values per session in a ``REPORT_INSPECT`` reply.
_INSPECT_WIDTH = 9
#: Owner indexes up to this size are read whole with ZRANGE; larger ones with ZSCAN.
_SMALL_INDEX = 1000
#: On a Redis Cluster a create adds the index entry before the session: entries younger than this
#: may be a create in flight, not drift.

# Kinds of corruption the report counts.
WRONG_TYPE = "wrong_type"  # the meta key is not a hash, or the message key not a sorted set (list: layout 1)
BAD_KEY = "bad_key"  # a key matching the session pattern whose id is not a session id
BAD_META = "bad_meta"  # the meta hash lacks a field, or a number field is not an integer
COUNT_MISMATCH = "count_mismatch"  # meta "count" differs from the messages held (set, or layout-1 list)
BAD_MESSAGE = "bad_message"  # a sampled message (first or last) is missing or not of the stored shape
NO_EXPIRY = "no_expiry"  # a key of the session has no TTL: it would never expire


@dataclass(frozen=True)
class ReportOptions:
    owner: str | None = None  # only this owner's sessions (None: every owner)
    idle_longer_than: int | None = None  # seconds; only sessions idle longer than this
    top: int = 10
    memory_sample_every: int = 10  # MEMORY USAGE on 1 session in N; 0 turns memory figures off
    repair: bool = False
    owner_capacity: int = 5000
    scan_count: int = 1000
    #: Seconds a session must have been idle for its in-progress messages to count as stalled replies.
    stalled_after: int = DEFAULT_STALLED_AFTER


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


#: One session that passed the filters, kept until its index entry is checked:
#: (session id, owner, owner index, updated_at, pttl, layout). A tuple: one per session counted.
_Candidate = tuple[str, str, str, int, int, int]


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
        self.stalled_messages = 0
        self.stalled_sessions = 0
        self.script_calls = 0
        #: The longest script call, client side (round trip included): an upper bound on how long the
        #: report held Redis at once.
        self.longest_call_s = 0.0
        self._per_call = 1 if store.topology.cluster else GROUPS_PER_CALL
        #: The thread that runs ``REPORT_CHECK`` calls, and the call in flight with what it was given.
        self._checks: ThreadPoolExecutor | None = None
        self._pending_check: tuple[list[_Candidate], list[bool], list[Any], Future[Any]] | None = None

    # ------------------------------------------------------------------ the pass

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        with redis_errors():
            self.now_ms = server_time_ms(self.client)
            if self.store.topology.cluster:
                callback = self.progress.update if self.progress is not None else None
                for batch in scan_batches(
                    self.client, self.keys.meta_pattern(), count=self.options.scan_count, progress=callback
                ):
                    self._session_batch(batch)
                    if self.progress is not None:
                        self.progress.update(items=self.sessions)
            else:
                try:
                    self._walk_single()
                    self._finish_check()
                finally:
                    if self._checks is not None:
                        self._checks.shutdown()
            self._check_indexes()
            largest = self._largest_sessions()
        if self.progress is not None:
            self.progress.finish()
        return self._result(largest, time.monotonic() - started)

    def _script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any], write: bool = False
    ) -> Any:
        """One script call through the store's transport (EVALSHA, loaded on NOSCRIPT), timed."""
        started = time.perf_counter()
        reply = self.store.sync.script(script, keys, args, write=write)
        elapsed = time.perf_counter() - started
        self.script_calls += 1
        if elapsed > self.longest_call_s:
            self.longest_call_s = elapsed
        return reply

    def _grouped(
        self,
        script: LuaScript,
        keys: Sequence[str],
        width: int,
        per_group: Sequence[Any] = (),
        fixed: Sequence[Any] = (),
    ) -> list[Any]:
        """``script`` over groups of ``width`` keys (and one arg per group when ``per_group``), a
        few hundred groups a call (one on a cluster); the flat replies, concatenated."""
        groups = len(keys) // width
        step = self._per_call
        flat: list[Any] = []
        for start in range(0, groups, step):
            stop = min(start + step, groups)
            args = [*fixed, *per_group[start:stop]] if per_group else fixed
            flat += self._script(script, keys[start * width : stop * width], args)
        return flat

    def _commands(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Plain commands in one round trip through the store's transport (packed by hand)."""
        replies: list[Any] = self.store.sync.commands(Commands(tuple(commands)))
        return replies

    def _walk_single(self) -> None:
        """The sessions on a single Redis: ``REPORT_SCAN`` steps (a SCAN and the inspection of what it
        found, in one script), the next one in flight while this one's reply is counted."""
        total = max(int(self.client.dbsize()), 1)
        count = min(self.options.scan_count, SCAN_IN_SCRIPT)
        for calls, (reply, elapsed) in enumerate(prefetched(self._scan_steps(count)), start=1):
            self.script_calls += 1
            if elapsed > self.longest_call_s:
                self.longest_call_s = elapsed
            width = _INSPECT_WIDTH + 1
            if len(reply) > 1:
                self.scanned_keys += (len(reply) - 1) // width
                session_ids = self._session_ids(reply[1::width])
                candidates = self._first_look(session_ids, reply, 2, width)
                if candidates:
                    self._second_look(candidates)
            if self.progress is not None:
                done = reply[0] in (0, b"0", "0")
                self.progress.update(1.0 if done else min(calls * count / total, 0.99), items=self.sessions)

    def _scan_steps(self, count: int) -> Iterator[tuple[list[Any], float]]:
        """Each ``REPORT_SCAN`` reply of the walk and how long its call took (client side)."""
        pattern = self.keys.meta_pattern()
        stall_cutoff = self.now_ms - self.options.stalled_after * 1000
        cursor: Any = 0
        while True:
            started = time.perf_counter()
            reply = self.store.sync.script(
                scripts.REPORT_SCAN, (), (cursor, pattern, count, stall_cutoff, STALL_SCAN_INLINE)
            )
            yield reply, time.perf_counter() - started
            cursor = reply[0]
            if cursor in (0, b"0", "0"):
                return

    def _session_ids(self, raw_keys: list[Any]) -> list[str | None]:
        """The session id in each meta key (None, and a ``bad_key`` problem, for a key matching the
        pattern that is not a session key of this layout)."""
        head = self.keys.session_head()
        start, length = len(head), len(head) + 22 + len("}:meta")
        match = SESSION_ID_RE.match
        ids: list[str | None] = []
        for raw in raw_keys:
            key = text(raw)
            session_id = key[start:-6]
            if len(key) == length and key.startswith(head) and key.endswith("}:meta") and match(session_id):
                ids.append(session_id)
            else:
                self.problems.add(BAD_KEY, key, "not a session key of this layout")
                ids.append(None)
        return ids

    def _session_batch(self, batch: list[Any]) -> None:
        self.scanned_keys += len(batch)
        layout = self.keys
        session_ids: list[str] = []
        script_keys: list[str] = []
        for raw_key in batch:
            key = text(raw_key)
            session_id = layout.session_id_from_key(key)
            if session_id is None or key != layout.meta(session_id):
                self.problems.add(BAD_KEY, key, "not a session key of this layout")
                continue
            head = key[:-4]  # "<prefix>:s:{<id>}:"
            session_ids.append(session_id)
            script_keys += (key, head + "m", head + "msgs")
        if not session_ids:
            return
        stall_cutoff = self.now_ms - self.options.stalled_after * 1000
        flat = self._grouped(scripts.REPORT_INSPECT, script_keys, 3, fixed=(stall_cutoff, STALL_SCAN_INLINE))
        candidates = self._first_look(session_ids, flat, 0, _INSPECT_WIDTH)
        if candidates:
            self._second_look(candidates)

    def _first_look(
        self, session_ids: Sequence[str | None], flat: list[Any], start: int, step: int
    ) -> list[_Candidate]:
        """Count every session of the batch that passes the filters, straight from the flat reply,
        whose session ``i`` has its 9 values at ``start + i * step`` (the hot path: no object per
        session but the tuple the index check needs). A None id is skipped."""
        options, layout, problems = self.options, self.keys, self.problems
        now = self.now_ms
        only_owner = options.owner
        idle_floor = None if options.idle_longer_than is None else options.idle_longer_than * 1000
        held_values: list[int] = []
        ages: list[int] = []
        idles: list[int] = []
        ttls: list[int] = []
        messages_add, age_add, idle_add, ttl_add = held_values.append, ages.append, idles.append, ttls.append
        largest_add, owners_add, owner_index = self.largest.add, self.owners.add, layout.owner_index
        candidates: list[_Candidate] = []
        width = _INSPECT_WIDTH
        for i, session_id in enumerate(session_ids):
            if session_id is None:
                continue
            at = start + i * step
            pttl, owner_raw, created_raw, updated_raw, count_raw, held, messages_pttl, version, stalled = (
                flat[at : at + width]
            )
            if pttl == -2:
                continue  # expired or deleted since SCAN saw it
            if held == -2:
                problems.add(WRONG_TYPE, layout.meta(session_id), "the meta key is not a hash")
                continue
            if owner_raw is None:
                problems.add(BAD_META, layout.meta(session_id), "no 'owner' field")
                continue
            owner = text(owner_raw)
            if only_owner is not None and owner != only_owner:
                continue
            try:
                created_at, updated_at, count = int(created_raw), int(updated_raw), int(count_raw)
                valid = created_at >= 0 and updated_at >= 0 and count >= 0
            except (TypeError, ValueError):
                valid = False
            if not valid:
                self._bad_numbers(session_id, created_raw, updated_raw, count_raw)
                continue
            if held == -1:
                kind = layout.messages(session_id) if version == 2 else layout.legacy_messages(session_id)
                problems.add(WRONG_TYPE, kind, "the message key has the wrong type")
                continue
            idle_ms = now - updated_at
            if idle_floor is not None and idle_ms <= idle_floor:
                continue
            if pttl == -1 or (messages_pttl == -1 and held > 0):
                problems.add(
                    NO_EXPIRY, layout.meta(session_id), "the session has no TTL and would never expire"
                )
            if count != held:
                problems.add(
                    COUNT_MISMATCH,
                    layout.meta(session_id),
                    f"count says {count} messages, Redis holds {held}",
                )
            if stalled:
                if stalled < 0:
                    stalled = self._stalled_in_large(session_id, held)
                if stalled:
                    self.stalled_messages += stalled
                    self.stalled_sessions += 1
            self.sessions += 1
            messages_add(held)
            age_add(now - created_at)
            idle_add(idle_ms)
            if pttl >= 0:
                ttl_add(pttl)
            largest_add(held, session_id, (owner, idle_ms))
            owners_add(owner)
            candidates.append((session_id, owner, owner_index(owner), updated_at, pttl, version))
        self.messages.add_many(held_values)
        self.age.add_many(ages)
        self.idle.add_many(idles)
        self.ttl.add_many(ttls)
        return candidates

    def _bad_numbers(self, session_id: str, *raws: Any) -> None:
        for name, raw in zip(("created_at", "updated_at", "count"), raws, strict=True):
            value = parse_int(raw)
            if value is None or value < 0:
                self.problems.add(
                    BAD_META, self.keys.meta(session_id), f"'{name}' is missing or not a non-negative integer"
                )
                return

    def _stalled_in_large(self, session_id: str, held: int) -> int:
        """In-progress messages of a session too large to scan in the inspecting call: a chunk a call."""
        key = self.keys.messages(session_id)
        stalled = 0
        for start in range(0, held, STALL_SCAN_CHUNK):
            stalled += int(self._script(scripts.REPORT_STALLED, [key], [start, start + STALL_SCAN_CHUNK - 1]))
        return stalled

    def _sampled(self, candidates: list[_Candidate]) -> list[bool]:
        """Whether each candidate is sampled: one session in ``memory_sample_every`` of those counted
        (the first of each run)."""
        every = self.options.memory_sample_every
        if every <= 0:
            return [False] * len(candidates)
        seen = self._seen_matching
        self._seen_matching = seen + len(candidates)
        return [n % every == 0 for n in range(seen, seen + len(candidates))]

    def _second_look(self, candidates: list[_Candidate]) -> None:
        if not self.store.topology.cluster:
            self._second_look_single(candidates)
            return
        scores = self._grouped(
            scripts.REPORT_INDEX_SCORES, [c[2] for c in candidates], 1, per_group=[c[0] for c in candidates]
        )
        sampled = [c for c, chosen in zip(candidates, self._sampled(candidates), strict=True) if chosen]
        if sampled:
            self._sample(sampled)
        missing = [c for c, score in zip(candidates, scores, strict=True) if score is None]
        if missing:
            self._recheck(missing)

    # On a single Redis the second look is one ``REPORT_CHECK`` call a batch, run by a thread while
    # the next batch is counted; its reply is read one batch later (``_finish_check``).

    def _second_look_single(self, candidates: list[_Candidate]) -> None:
        if self._checks is None:
            self._checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conversations-report")
        chosen = self._sampled(candidates)
        args: list[Any] = [self.keys.session_head(), "1" if self.memory_enabled else "0"]
        for (session_id, _owner, index, _updated, _pttl, version), sampled in zip(
            candidates, chosen, strict=True
        ):
            args += (index, session_id, "1" if sampled else "0", version)
        future = self._checks.submit(self._timed_call, scripts.REPORT_CHECK, args)
        self._finish_check()
        self._pending_check = (candidates, chosen, args, future)

    def _timed_call(self, script: LuaScript, args: list[Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        reply = self.store.sync.script(script, (), args)
        return reply, time.perf_counter() - started

    def _finish_check(self) -> None:
        """Count the reply of the ``REPORT_CHECK`` call in flight, if any."""
        if self._pending_check is None:
            return
        candidates, chosen, args, future = self._pending_check
        self._pending_check = None
        try:
            reply, elapsed = future.result()
        except redis.ResponseError as exc:
            if not self.memory_enabled:
                raise
            # Some managed Redis services refuse MEMORY: report the figures as unavailable.
            self.memory_enabled = False
            self.memory_error = str(exc)
            args[1] = "0"
            reply, elapsed = self._timed_call(scripts.REPORT_CHECK, args)
        self.script_calls += 1
        if elapsed > self.longest_call_s:
            self.longest_call_s = elapsed
        count = len(candidates)
        at = count
        for candidate, sampled in zip(candidates, chosen, strict=True):
            if sampled:
                memory, first, last = reply[at : at + 3]
                at += 3
                if memory is not None:
                    self.memory_sampled += 1
                    self.memory_sampled_bytes += int(memory)
                self._check_ends(candidate[0], candidate[5], first, last)
        missing = [c for c, score in zip(candidates, reply[:count], strict=True) if score is None]
        if missing:
            self._recheck(missing)

    def _sample(self, sampled: list[_Candidate]) -> None:
        """MEMORY USAGE of the sampled sessions' keys and a check of their first and last messages,
        in one round trip; the messages are read from where the session's layout keeps them."""
        layout = self.keys
        commands: list[tuple[Any, ...]] = []
        for session_id, _owner, _index, _updated, _pttl, version in sampled:
            meta, messages, idem, events = layout.session_keys(session_id)
            if version != 2:
                messages = layout.legacy_messages(session_id)
            if self.memory_enabled:
                commands += [("MEMORY", "USAGE", key) for key in (meta, messages, idem, events)]
            if version == 2:
                commands += [("ZRANGE", messages, 0, 0), ("ZRANGE", messages, -1, -1)]
            else:
                commands += [("LINDEX", messages, 0), ("LINDEX", messages, -1)]
        try:
            replies = self._commands(commands)
        except redis.ResponseError as exc:
            if not self.memory_enabled:
                raise
            # Some managed Redis services refuse MEMORY: report the figures as unavailable.
            self.memory_enabled = False
            self.memory_error = str(exc)
            self._sample(sampled)
            return
        width = 6 if self.memory_enabled else 2
        for i, (session_id, *_rest) in enumerate(sampled):
            at = i * width
            if self.memory_enabled:
                self.memory_sampled += 1
                self.memory_sampled_bytes += sum(int(reply or 0) for reply in replies[at : at + 4])
            first, last = replies[at + width - 2 : at + width]
            version = sampled[i][5]
            if version == 2:
                first = first[0] if first else None
                last = last[0] if last else None
            self._check_ends(session_id, version, first, last)

    def _check_ends(self, session_id: str, version: int, first: Any, last: Any) -> None:
        """A ``bad_message`` problem if a sampled session's first or last message is not of the
        stored shape (None for both: no message, or all removed since the first look)."""
        if first is None and last is None:
            return
        for raw in (first, last):
            problem = message_problem(raw)
            if problem is not None:
                layout = self.keys
                where = layout.messages(session_id) if version == 2 else layout.legacy_messages(session_id)
                self.problems.add(BAD_MESSAGE, where, problem)
                return

    def _recheck(self, missing: list[_Candidate]) -> None:
        # Read again what looked missing from its index: a session created or deleted between the
        # two looks must not be reported as drift.
        commands: list[tuple[Any, ...]] = []
        for session_id, _owner, index, *_rest in missing:
            commands += [("EXISTS", self.keys.meta(session_id)), ("ZSCORE", index, session_id)]
        replies = self._commands(commands)
        for i, (session_id, _owner, index, updated_at, pttl, _version) in enumerate(missing):
            exists, score = replies[2 * i], replies[2 * i + 1]
            if exists != 1 or score is not None:
                continue
            self.missing_from_index += 1
            self._drift_example("missing", index, session_id)
            if self.options.repair:
                self._script(
                    scripts.REPORT_REPAIR_MISSING, [index], [updated_at, session_id, pttl], write=True
                )
                self.repaired_missing += 1

    def _drift_example(self, kind: str, index: str, session_id: str) -> None:
        if len(self.drift_examples) < 2 * EXAMPLES:
            self.drift_examples.append({"kind": kind, "index": index, "session_id": session_id})

    # ------------------------------------------------------------------ owner indexes

    def _check_indexes(self) -> None:
        if self.options.owner is not None:
            self._index_batch([self.keys.owner_index(self.options.owner)])
        elif self.store.topology.cluster:
            for batch in scan_batches(self.client, self.keys.index_pattern(), count=self.options.scan_count):
                self._index_batch([text(key) for key in batch])
        else:
            for reply, elapsed in prefetched(self._index_steps()):
                self.script_calls += 1
                if elapsed > self.longest_call_s:
                    self.longest_call_s = elapsed
                self._index_step(reply)
        self._flush_entries()

    def _index_steps(self) -> Iterator[tuple[list[Any], float]]:
        """Each ``REPORT_INDEXES`` reply of the walk over the owner indexes (single Redis), and how
        long its call took (client side)."""
        pattern, head = self.keys.index_pattern(), self.keys.session_head()
        count = self.options.scan_count
        cursor: Any = 0
        while True:
            args = [
                cursor,
                pattern,
                count,
                "1" if self.memory_enabled else "0",
                _SMALL_INDEX,
                ENTRIES_PER_CALL,
                head,
            ]
            started = time.perf_counter()
            try:
                reply = self.store.sync.script(scripts.REPORT_INDEXES, (), args)
            except redis.ResponseError as exc:
                if not self.memory_enabled:
                    raise
                # Some managed Redis services refuse MEMORY: report the figures as unavailable.
                self.memory_enabled = False
                self.memory_error = str(exc)
                continue
            yield reply, time.perf_counter() - started
            cursor = reply[0]
            if cursor in (0, b"0", "0"):
                return

    def _index_step(self, reply: list[Any]) -> None:
        for at in range(1, len(reply), 4):
            index, size, memory, rows = text(reply[at]), int(reply[at + 1]), reply[at + 2], reply[at + 3]
            self.index_keys += 1
            if memory is not None:
                self.index_bytes += int(memory)
            if rows is None:
                self._read_index(index, size)
            else:
                self._index_rows(index, rows)

    def _index_rows(self, index: str, rows: list[Any]) -> None:
        """Check an index's entries read with their sessions' owners: (session id, score, owner)."""
        tag = index[index.find("{") + 1 : index.find("}")]
        idle = self.options.idle_longer_than
        floor = None if idle is None else self.now_ms - idle * 1000
        match, owner_tag = SESSION_ID_RE.match, KeyLayout.owner_tag
        self.index_entries += len(rows) // 3
        stale: list[tuple[str, str, str]] = []
        owner_seen = None  # an owner already found to be this index's
        for at in range(0, len(rows), 3):
            if floor is not None and int(float(rows[at + 1])) >= floor:
                continue
            session_id, owner = text(rows[at]), rows[at + 2]
            if owner is None or not match(session_id):
                stale.append((index, tag, session_id))
            elif owner != owner_seen:
                if owner_tag(text(owner)) != tag:
                    stale.append((index, tag, session_id))
                else:
                    owner_seen = owner
        if stale:
            self._stale_entries(stale)

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
                self._read_index(index, size)

    def _read_index(self, index: str, size: int) -> None:
        """The entries of one index, to be checked in batches: whole (ZRANGE) when small, else by
        ZSCAN."""
        if size <= _SMALL_INDEX:
            with suppress(redis.ResponseError):  # no longer a sorted set
                self._add_entries(index, self.client.zrange(index, 0, -1, withscores=True))
            return
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
            owners = self._grouped(scripts.REPORT_OWNERS, [self.keys.meta(sid) for _, _, sid in checked], 1)
            for entry, owner in zip(checked, owners, strict=True):
                if owner is None or KeyLayout.owner_tag(text(owner)) != entry[1]:
                    stale.append(entry)
        if stale:
            self._stale_entries(stale)

    def _stale_entries(self, stale: list[tuple[str, str, str]]) -> None:
        """Count (and with ``repair``, remove) index entries found stale: (index, tag, session id)."""
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
            width = len(_SESSION_KEY_KINDS)
            for i in range(len(ranked)):
                parts = replies[width * i : width * i + width]
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
            "stalled_replies": {
                "idle_longer_than_seconds": options.stalled_after,
                "messages": self.stalled_messages,
                "sessions": self.stalled_sessions,
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
            "script_calls": self.script_calls,
            "longest_script_call_ms": round(self.longest_call_s * 1000, 3),
            "elapsed_seconds": round(elapsed, 3),
        }


def build_report(
    store: ConversationStore, options: ReportOptions, progress: Progress | None = None
) -> dict[str, Any]:
    """Scan the store's keys once and return the report as plain JSON-ready data."""
    return ReportBuilder(store, options, progress).run()

"""``conversations_import``: move sessions written by the seed store into the product's layout.

The seed kept each session as one JSON string at ``session:<8 hex chars>``::

    {"session_id": "...", "created_at": <s>, "updated_at": <s>, "metadata": {...},
     "messages": [{"role": "...", "content": "...", "timestamp": <s>, "sources": [...]}, ...]}

Each one becomes a product session with a new, unguessable id: the meta hash (owner, title taken from
``metadata["title"]`` when it is a string, metadata, created/updated times in ms), the message list
(ids 1..n, each message's timestamp in ms, its sources), the owner index entry, and the source key's
remaining TTL (``SESSION_TTL`` when the source has none).

Safety:

* One Lua script writes a whole session (its keys share a hash tag) and, on a single Redis, its index
  entry and the mapping entry too: a crash leaves the session entirely written or not at all.
* ``<KEY_PREFIX>:import:seed`` is a hash, kept without TTL, mapping each source key to its new
  session id. A source found there is never imported again, so a second run imports nothing twice.
  (On a Redis Cluster the index and mapping are separate calls; a crash between the script and the
  mapping call could let a rerun import that one session again.)
* Source values are validated as the store validates input. A corrupt value (not JSON, missing
  fields) or one beyond this site's limits (``MAX_MESSAGES``, ``MAX_MESSAGE_LENGTH``, ``ROLES``...) is
  reported and skipped, never truncated.
* ``delete_source`` deletes a source only after reading the copy back and finding every message
  byte for byte, and only if the source still holds the value that was read (one atomic check).
* The import sends no signals: moving data is not user activity.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from django.utils.translation import gettext_lazy as _

from conversations.exceptions import InvalidInput
from conversations.store import ConversationStore, codec, new_session_id, scripts
from conversations.store import validation as check

from .scanning import redis_errors, scan_batches, text

DEFAULT_SOURCE_PREFIX = "session:"
#: Sources read per pipeline: each value may be large, so fewer than a SCAN reply.
BATCH = 100
# Why a source was skipped.
CORRUPT = "corrupt"
OVER_LIMITS = "over_limits"
NOT_A_STRING = "not_a_string"


@dataclass(frozen=True)
class ImportOptions:
    source_prefix: str = DEFAULT_SOURCE_PREFIX
    owner: str | None = None  # every imported session gets this owner
    owner_from_metadata: str | None = None  # ...or the value of this metadata key
    owner_template: str = "{}"  # "{}" is replaced by that value, e.g. "user:{}"
    dry_run: bool = False
    delete_source: bool = False

    def __post_init__(self) -> None:
        if not self.source_prefix:
            raise InvalidInput(str(_("The source prefix must not be empty.")), field="--source-prefix")
        if self.owner is not None and self.owner_from_metadata is not None:
            raise InvalidInput(str(_("Use --owner or --owner-from-metadata, not both.")), field="--owner")
        if self.owner is not None:
            check.owner_value(self.owner)
        if self.owner_from_metadata is not None and not self.owner_from_metadata:
            raise InvalidInput(
                str(_("--owner-from-metadata needs a metadata key.")), field="--owner-from-metadata"
            )
        if self.owner_template.count("{}") != 1:
            raise InvalidInput(
                str(_("--owner-template must contain {} exactly once.")), field="--owner-template"
            )
        if self.dry_run and self.delete_source:
            raise InvalidInput(
                str(_("--delete-source cannot be combined with --dry-run.")), field="--delete-source"
            )


@dataclass
class ImportResult:
    scanned: int = 0  # keys under the source prefix
    imported: int = 0  # sessions written by this run (or, in a dry run, that would be)
    messages: int = 0  # messages in them
    unowned: int = 0  # of those, sessions without an owner (no --owner / metadata key absent)
    already_imported: int = 0  # sources found in the mapping: left alone
    corrupt: int = 0  # skipped: not JSON, or missing / mistyped fields
    over_limits: int = 0  # skipped: beyond this site's limits, or a role it does not accept
    not_a_string: int = 0  # skipped: a key of another type under the prefix
    vanished: int = 0  # expired or deleted between SCAN and GET
    sources_deleted: int = 0
    sources_kept: int = 0  # --delete-source, but the copy did not verify or the source changed

    @property
    def skipped(self) -> int:
        return self.corrupt + self.over_limits + self.not_a_string


class _Skip(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class _Planned:
    owner: str
    title: str
    metadata: bytes
    created_at: int
    updated_at: int
    messages: list[bytes]


def glob_escape(value: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", value)


def _seconds_to_ms(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**42:
        raise _Skip(CORRUPT, f"{name} is not a timestamp in seconds")
    return round(float(value) * 1000)


class SeedImporter:
    """Runs one import. ``on_skip(source_key, kind, reason)`` hears of every source left behind."""

    def __init__(
        self,
        store: ConversationStore,
        options: ImportOptions,
        on_skip: Callable[[str, str, str], Any] | None = None,
    ) -> None:
        self.store = store
        self.client = store.client
        self.keys = store.keys
        self.config = store.config
        self.options = options
        self.on_skip = on_skip
        self.result = ImportResult()
        self.mapping_key = mapping_key(store)
        self._own_prefix = f"{self.keys.prefix}:"
        self.cluster = store.topology.cluster

    def run(self) -> ImportResult:
        pattern = glob_escape(self.options.source_prefix) + "*"
        with redis_errors():
            for keys in scan_batches(self.client, pattern):
                for start in range(0, len(keys), BATCH):
                    self._batch(keys[start : start + BATCH])
        return self.result

    # ------------------------------------------------------------------ one batch of sources

    def _batch(self, raw_keys: list[Any]) -> None:
        # The product's own keys may share the source prefix (e.g. KEY_PREFIX "session"): never sources.
        raw_keys = [key for key in raw_keys if not text(key).startswith(self._own_prefix)]
        self.result.scanned += len(raw_keys)
        if not raw_keys:
            return
        pipe = self.client.pipeline(transaction=False)
        for raw_key in raw_keys:
            pipe.get(raw_key)
            pipe.pttl(raw_key)
            pipe.hget(self.mapping_key, text(raw_key))
        replies = pipe.execute(raise_on_error=False)
        for i, raw_key in enumerate(raw_keys):
            value, pttl, prior = replies[3 * i : 3 * i + 3]
            self._source(raw_key, value, pttl, prior)

    def _source(self, raw_key: Any, value: Any, pttl: Any, prior: Any) -> None:
        name = text(raw_key)
        if isinstance(value, Exception):
            self._skip(name, _Skip(NOT_A_STRING, "not a string key"))
            return
        if value is None:
            self.result.vanished += 1
            return
        if prior is not None and not isinstance(prior, Exception):
            self.result.already_imported += 1
            if self.options.delete_source:
                self._delete_after_check(raw_key, value, text(prior))
            return
        try:
            planned = self._plan(name, value)
        except _Skip as skip:
            self._skip(name, skip)
            return
        self.result.imported += 1
        self.result.messages += len(planned.messages)
        self.result.unowned += int(planned.owner == "")
        if self.options.dry_run:
            return
        ttl_ms = int(pttl) if isinstance(pttl, int) and pttl > 0 else self.store.ttl_ms
        new_id = self._write(name, planned, ttl_ms)
        if new_id is None:
            # Another import run claimed this source meanwhile: it is that run's session now.
            self.result.imported -= 1
            self.result.messages -= len(planned.messages)
            self.result.unowned -= int(planned.owner == "")
            self.result.already_imported += 1
            return
        if self.options.delete_source:
            self._delete_verified(raw_key, value, new_id, planned)

    def _skip(self, name: str, skip: _Skip) -> None:
        if skip.kind == CORRUPT:
            self.result.corrupt += 1
        elif skip.kind == OVER_LIMITS:
            self.result.over_limits += 1
        else:
            self.result.not_a_string += 1
        if self.on_skip is not None:
            self.on_skip(name, skip.kind, skip.reason)

    # ------------------------------------------------------------------ reading a seed value

    def _plan(self, name: str, value: bytes | str) -> _Planned:
        if not name[len(self.options.source_prefix) :]:
            raise _Skip(CORRUPT, "the key name holds no session id")
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise _Skip(CORRUPT, f"not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise _Skip(CORRUPT, "not a JSON object")
        if not isinstance(data.get("session_id"), str):
            raise _Skip(CORRUPT, "no 'session_id'")
        metadata = data.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise _Skip(CORRUPT, "'metadata' is not an object")
        raw_messages = data.get("messages")
        if raw_messages is None:
            raw_messages = []
        if not isinstance(raw_messages, list):
            raise _Skip(CORRUPT, "'messages' is not a list")
        cfg = self.config
        if len(raw_messages) > cfg.max_messages:
            raise _Skip(OVER_LIMITS, f"{len(raw_messages)} messages; MAX_MESSAGES is {cfg.max_messages}")
        messages: list[bytes] = []
        stamps: list[int] = []
        for n, message in enumerate(raw_messages, start=1):
            if not isinstance(message, dict):
                raise _Skip(CORRUPT, f"message {n} is not an object")
            for field in ("role", "content", "timestamp"):
                if field not in message:
                    raise _Skip(CORRUPT, f"message {n} has no '{field}'")
            if not isinstance(message["role"], str) or not isinstance(message["content"], str):
                raise _Skip(CORRUPT, f"message {n}: 'role' and 'content' must be strings")
            created = _seconds_to_ms(message["timestamp"], f"message {n}'s timestamp")
            raw_sources = message.get("sources")
            if raw_sources is not None and not isinstance(raw_sources, list):
                raise _Skip(CORRUPT, f"message {n}: 'sources' is not a list")
            try:
                role = check.role_value(message["role"], roles=cfg.roles)
                content = check.content_value(message["content"], max_length=cfg.max_message_length)
                sources = check.sources_bytes(
                    raw_sources,
                    max_sources=cfg.max_sources,
                    max_bytes=cfg.max_sources_bytes,
                    max_depth=cfg.max_json_depth,
                )
            except InvalidInput as exc:
                raise _Skip(OVER_LIMITS, f"message {n}: {exc.message}") from None
            stamps.append(created)
            messages.append(
                codec.stored_message(n, created, codec.message_body(role, content, sources_b=sources))
            )
        # The seed wrote 0 where it had no time; fall back on the messages' times, then on each other.
        created_at = _seconds_to_ms(data.get("created_at") or 0, "created_at")
        updated_at = _seconds_to_ms(data.get("updated_at") or 0, "updated_at")
        created_at = created_at or (min(stamps) if stamps else updated_at)
        updated_at = updated_at or (max(stamps) if stamps else created_at)
        try:
            metadata_b = check.metadata_bytes(
                metadata, max_bytes=cfg.max_metadata_bytes, max_depth=cfg.max_json_depth
            )
            title = metadata.get("title")
            title_v = check.title_value(
                title if isinstance(title, str) else "", max_length=cfg.max_title_length
            )
            owner = self._owner(metadata)
        except InvalidInput as exc:
            raise _Skip(OVER_LIMITS, exc.message) from None
        return _Planned(owner, title_v, metadata_b, created_at, updated_at, messages)

    def _owner(self, metadata: dict[str, Any]) -> str:
        options = self.options
        if options.owner is not None:
            return options.owner
        if options.owner_from_metadata is None:
            return ""
        value = metadata.get(options.owner_from_metadata)
        if value is None or value == "":
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidInput(
                f"metadata[{options.owner_from_metadata!r}] is not a string or an integer", field="owner"
            )
        return check.owner_value(options.owner_template.replace("{}", str(value)))

    # ------------------------------------------------------------------ writing

    def _write(self, name: str, planned: _Planned, ttl_ms: int) -> str | None:
        """Write the session; its new id, or None if another run has imported this source."""
        self.store.write_layout_version()
        index = self.keys.owner_index(planned.owner)
        while True:
            session_id = new_session_id()
            keys = [self.keys.meta(session_id), self.keys.messages(session_id)]
            if not self.cluster:
                keys += [index, self.mapping_key]
            elif self.client.hget(self.mapping_key, name) is not None:
                return None
            else:
                # As the store's create does on a cluster: the index entry goes first.
                self.client.zadd(index, {session_id: planned.updated_at})
                self.client.pexpire(index, ttl_ms)
            reply = self.store.sync.script(
                scripts.IMPORT,
                keys,
                [
                    planned.owner,
                    planned.title,
                    planned.metadata,
                    planned.created_at,
                    planned.updated_at,
                    len(planned.messages),
                    ttl_ms,
                    session_id,
                    name,
                    *planned.messages,
                ],
                write=True,
            )
            status = int(reply[0])
            if status == 1:
                if self.cluster:
                    self.client.hset(self.mapping_key, name, session_id)
                return session_id
            if status == 0:
                return None
            # status -1: 128 random bits collided with a live session; draw again (never overwrite).

    # ------------------------------------------------------------------ deleting sources

    def _delete_after_check(self, raw_key: Any, value: bytes, new_id: str) -> None:
        """--delete-source for a source imported by an earlier run: verify against that copy."""
        try:
            planned = self._plan(text(raw_key), value)
        except _Skip as skip:
            self.result.sources_kept += 1
            if self.on_skip is not None:
                self.on_skip(text(raw_key), "kept", f"source not deleted: {skip.reason}")
            return
        self._delete_verified(raw_key, value, new_id, planned)

    def _delete_verified(self, raw_key: Any, value: bytes, new_id: str, planned: _Planned) -> None:
        problem = self._verify(new_id, planned)
        if problem is None and not self.store.sync.script(
            scripts.DELETE_IF_UNCHANGED, [raw_key], [value], write=True
        ):
            problem = "the source changed after it was read"
        if problem is None:
            self.result.sources_deleted += 1
            return
        self.result.sources_kept += 1
        if self.on_skip is not None:
            self.on_skip(text(raw_key), "kept", f"source not deleted: {problem}")

    def _verify(self, session_id: str, planned: _Planned) -> str | None:
        """Why the stored copy does not match what was read, or None when it does."""
        n = len(planned.messages)
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.meta(session_id), "owner", "count")
        pipe.zrange(self.keys.messages(session_id), 0, n - 1)
        (owner, count), stored = pipe.execute()
        if owner is None:
            return f"the copy {session_id} is gone"
        if text(owner) != planned.owner or int(count or 0) < n:
            return f"the copy {session_id} has another owner or fewer messages"
        if [bytes(m) if not isinstance(m, str) else m.encode() for m in stored] != planned.messages:
            return f"the messages of the copy {session_id} differ from the source"
        return None


def mapping_key(store: ConversationStore) -> str:
    """The hash mapping each imported source key to its new session id (kept without TTL)."""
    return store.keys.import_mapping()


def import_seed_sessions(
    store: ConversationStore,
    options: ImportOptions,
    on_skip: Callable[[str, str, str], Any] | None = None,
) -> ImportResult:
    """Import every seed session under ``options.source_prefix``; see the module docstring."""
    return SeedImporter(store, options, on_skip).run()


def write_mapping(store: ConversationStore, source_prefix: str, stream: TextIO) -> int:
    """Write ``old_id,new_id`` for every source under ``source_prefix`` ever imported; the row count."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["old_id", "new_id"])
    rows = 0
    with redis_errors():
        for field, new_id in store.client.hscan_iter(
            mapping_key(store), match=glob_escape(source_prefix) + "*", count=1000
        ):
            writer.writerow([text(field)[len(source_prefix) :], text(new_id)])
            rows += 1
    return rows

"""``ConversationStore``: chat sessions in Redis, one round trip per write, safe under concurrency.

Layout: see ``conversations.store.keys``. Rules the code below keeps:

* Every write is one Lua script over the session's keys (one hash tag): it checks that the session
  exists and belongs to the caller, writes, and renews the TTL of *every* key of the session, so a
  session is never half-written and never outlives part of itself. An expired or deleted session is
  never recreated by a late write.
* On a single Redis the owner index is updated inside the same script. On a Redis Cluster (where the
  index lives in another slot) it is updated by a second call: added *before* a session is created
  and removed *after* it is deleted, so a session is never missing from its index; entries whose
  session has gone are pruned when a listing meets them.
* Reads are scripts too, so a missing session and another owner's session take the same path.
* Input is validated before anything is sent; a malformed id is "not found" without building a key.
"""

from __future__ import annotations

import base64
import functools
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
import redis
from redis.cluster import RedisCluster

from conversations import signals
from conversations.conf import conf
from conversations.exceptions import (
    IdempotencyConflict,
    InvalidInput,
    SessionFull,
    SessionNotFound,
    StoreOutOfMemory,
    StoreUnavailable,
)

from . import scripts, validation
from .keys import LAYOUT_VERSION, SESSION_ID_RE, UNOWNED, KeyLayout, digest
from .records import Message, Session, SessionPage, SessionSummary, from_millis

logger = logging.getLogger("conversations")

P = ParamSpec("P")
R = TypeVar("R")

#: Sentinel for "leave this field unchanged" in ``update_session``.
UNSET: Any = object()

# How long a cluster-mode index entry may point at a session not yet written before a listing prunes it.
_CLUSTER_INDEX_GRACE_MS = 10_000
_CREATE_RETRIES = 5

_UNAVAILABLE_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError)


def _translate_redis_errors(
    method: Callable[Concatenate[ConversationStore, P], R],
) -> Callable[Concatenate[ConversationStore, P], R]:
    """Turn redis-py's failures into the store's errors, keeping the cause chained."""

    @functools.wraps(method)
    def wrapper(self: ConversationStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except _UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
        except redis.ResponseError as exc:
            text = str(exc)
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM" in text.split(" ", 2)[:2]:
                raise StoreOutOfMemory(f"Redis is out of memory: {text}") from exc
            if isinstance(exc, redis.exceptions.ReadOnlyError) or text.startswith(
                ("READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY")
            ):
                raise StoreUnavailable(f"Redis cannot serve this now: {text}") from exc
            raise

    return wrapper


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The limits and names a store works with. ``from_settings()`` reads ``settings.CONVERSATIONS``."""

    key_prefix: str = "conversations"
    session_ttl: int = 1800
    max_message_length: int = 32_000
    max_messages: int = 10_000
    max_sources: int = 50
    max_sources_bytes: int = 65_536
    max_metadata_bytes: int = 16_384
    max_json_depth: int = 16
    max_title_length: int = 200
    roles: tuple[str, ...] = ("user", "assistant", "system", "tool")

    @classmethod
    def from_settings(cls) -> StoreConfig:
        return cls(
            key_prefix=conf.KEY_PREFIX,
            session_ttl=conf.SESSION_TTL,
            max_message_length=conf.MAX_MESSAGE_LENGTH,
            max_messages=conf.MAX_MESSAGES,
            max_sources=conf.MAX_SOURCES,
            max_sources_bytes=conf.MAX_SOURCES_BYTES,
            max_metadata_bytes=conf.MAX_METADATA_BYTES,
            max_json_depth=conf.MAX_JSON_DEPTH,
            max_title_length=conf.MAX_TITLE_LENGTH,
            roles=conf.ROLES,
        )


def new_session_id() -> str:
    """128 random bits, URL-safe: not guessable, not sequential."""
    return secrets.token_urlsafe(16)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def encode_cursor(score: int, session_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}.{session_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        score_text, session_id = raw.split(".", 1)
        score = int(score_text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("This cursor is not valid.", field="cursor") from exc
    if score < 0 or not SESSION_ID_RE.match(session_id):
        raise InvalidInput("This cursor is not valid.", field="cursor")
    return score, session_id


class ConversationStore:
    """Conversations in Redis, on a redis-py client. ``get_store()`` builds one from settings."""

    def __init__(self, client: Any, config: StoreConfig | None = None) -> None:
        self.client = client
        self.config = config or StoreConfig()
        self.keys = KeyLayout(self.config.key_prefix)
        self.ttl_ms = self.config.session_ttl * 1000
        self.is_cluster = isinstance(client, RedisCluster)
        self._create = client.register_script(scripts.CREATE)
        self._append = client.register_script(scripts.APPEND)
        self._update = client.register_script(scripts.UPDATE)
        self._delete = client.register_script(scripts.DELETE)
        self._read = client.register_script(scripts.READ)
        self._layout_written = False

    # ------------------------------------------------------------------ helpers

    def _index_keys(self, owner: str) -> list[str]:
        """The owner index as an extra script key, on a single Redis only (see the module docstring)."""
        return [] if self.is_cluster else [self.keys.owner_index(owner)]

    def _decode_message(self, raw: bytes, session_id: str) -> Message | None:
        try:
            data = orjson.loads(raw)
            return Message(
                id=int(data["id"]),
                role=str(data["role"]),
                content=str(data["content"]),
                sources=list(data.get("sources") or []),
                created_at=from_millis(data["created_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
            logger.warning("Skipping a corrupt message in %s", self.keys.messages(session_id))
            return None

    def _decode_metadata(self, raw: bytes | str | None, session_id: str) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            logger.warning("Ignoring corrupt metadata in %s", self.keys.meta(session_id))
            return {}
        return value

    def _summary(
        self,
        session_id: str,
        owner: str,
        *,
        pttl: int,
        title: Any,
        metadata: Any,
        created_at: Any,
        updated_at: Any,
        count: Any,
    ) -> SessionSummary:
        # The expiry is reckoned from now, so it stays true even if the TTL setting changed since the write.
        expires_at = from_millis(time.time() * 1000 + pttl) if pttl >= 0 else None
        return SessionSummary(
            id=session_id,
            owner=owner or None,
            title=_text(title),
            metadata=self._decode_metadata(metadata, session_id),
            created_at=from_millis(created_at or 0),
            updated_at=from_millis(updated_at or 0),
            expires_at=expires_at,
            message_count=int(count or 0),
        )

    def _read_session(
        self, session_id: Any, owner: str, start: str, stop: str, *, details: bool
    ) -> tuple[SessionSummary, list[Message]] | None:
        if not validation.is_session_id(session_id):
            return None
        reply = self._read(
            keys=[self.keys.meta(session_id), self.keys.messages(session_id)],
            args=[owner, start, stop, "1" if details else "0"],
        )
        if reply is None:
            return None
        pttl, created_at, updated_at, count, title, metadata = reply[:6]
        summary = self._summary(
            session_id,
            owner,
            pttl=int(pttl),
            title=title,
            metadata=metadata,
            created_at=created_at,
            updated_at=updated_at,
            count=count,
        )
        raw_messages = reply[6] if len(reply) > 6 and reply[6] else []
        messages = [m for raw in raw_messages if (m := self._decode_message(raw, session_id)) is not None]
        return summary, messages

    def _write_layout_version(self) -> None:
        if not self._layout_written:
            self.client.set(self.keys.layout(), LAYOUT_VERSION, nx=True)
            self._layout_written = True

    # ------------------------------------------------------------------ the seed's five methods

    @_translate_redis_errors
    def create_session(
        self,
        metadata: dict[str, Any] | None = None,
        *,
        owner: str | None = None,
        title: str = "",
        idempotency_key: str | None = None,
    ) -> Session:
        """Create an empty session and return it. Never overwrites an existing session.

        With ``idempotency_key``, a repeated call (same owner, key and input) returns the session the
        first call created instead of creating another; the same key with other input raises
        ``IdempotencyConflict``.
        """
        cfg = self.config
        owner_v = validation.owner_value(owner)
        title_v = validation.title_value(title, max_length=cfg.max_title_length)
        metadata_b = validation.metadata_bytes(
            metadata, max_bytes=cfg.max_metadata_bytes, max_depth=cfg.max_json_depth
        )
        session_id = new_session_id()
        if idempotency_key is not None:
            key = validation.idempotency_key_value(idempotency_key)
            fingerprint = digest(title_v + "\x00" + metadata_b.decode())
            prior = self._claim_create_key(owner_v, key, fingerprint, session_id)
            if prior is not None:
                return prior
        self._write_layout_version()
        for _ in range(_CREATE_RETRIES):
            index = self.keys.owner_index(owner_v)
            if self.is_cluster:
                now_ms = int(time.time() * 1000)
                self.client.zadd(index, {session_id: now_ms})
                self.client.pexpire(index, self.ttl_ms)
            created = self._create(
                keys=[self.keys.meta(session_id), *self._index_keys(owner_v)],
                args=[owner_v, title_v, metadata_b, self.ttl_ms, session_id],
            )
            if created is not None:
                break
            # 128 random bits do not collide in practice; if they ever do, the live session is kept.
            session_id = new_session_id()  # pragma: no cover
        else:  # pragma: no cover
            raise StoreUnavailable("Could not allocate a fresh session id.")
        created_at = from_millis(created)
        session = Session(
            id=session_id,
            owner=owner,
            title=title_v,
            metadata=orjson.loads(metadata_b),
            created_at=created_at,
            updated_at=created_at,
            expires_at=created_at + timedelta(milliseconds=self.ttl_ms),
            message_count=0,
            messages=[],
        )
        signals.session_created.send(sender=ConversationStore, session=session, owner=owner)
        return session

    def _claim_create_key(self, owner: str, key: str, fingerprint: str, session_id: str) -> Session | None:
        """Reserve an idempotency key for a create, or return the session an earlier call created."""
        redis_key = self.keys.owner_idempotency(owner, digest(key))
        for _ in range(20):
            if self.client.set(redis_key, f"{fingerprint} {session_id}", nx=True, px=self.ttl_ms):
                return None
            raw = self.client.get(redis_key)
            if raw is None:
                continue
            prior_fingerprint, _, prior_id = _text(raw).partition(" ")
            if prior_fingerprint != fingerprint:
                raise IdempotencyConflict("This idempotency key was used with a different request.")
            session = self.get_session(prior_id, owner=owner or None)
            if session is not None:
                return session
            # The first call is still creating it, or its session is gone: wait briefly, then start over.
            time.sleep(0.05)
            if self.get_session(prior_id, owner=owner or None) is None:
                self.client.delete(redis_key)
        raise StoreUnavailable("Could not settle an idempotent create.")  # pragma: no cover

    @_translate_redis_errors
    def get_session(self, session_id: str, *, owner: str | None = None) -> Session | None:
        """The session with all its messages, or None if it is missing, expired or another owner's."""
        found = self._read_session(session_id, validation.owner_value(owner), "0", "-1", details=True)
        if found is None:
            return None
        summary, messages = found
        return Session(**_fields(summary), messages=messages)

    def save_message(
        self,
        session_id: str,
        *,
        role: str,
        content: str,
        sources: list[dict[str, Any]] | None = None,
        owner: str | None = None,
    ) -> Session | None:
        """Append a message and return the updated session, or None if the session is not there.

        Kept from the seed store; ``append_message`` is the O(1) call that returns just the message.
        """
        try:
            self.append_message(session_id, role=role, content=content, sources=sources, owner=owner)
        except SessionNotFound:
            return None
        return self.get_session(session_id, owner=owner)

    @_translate_redis_errors
    def delete_session(self, session_id: str, *, owner: str | None = None) -> bool:
        """Delete a session. True if it existed (and was the owner's), False otherwise."""
        owner_v = validation.owner_value(owner)
        if not validation.is_session_id(session_id):
            return False
        deleted = bool(
            self._delete(
                keys=[*self.keys.session_keys(session_id), *self._index_keys(owner_v)],
                args=[owner_v, session_id],
            )
        )
        if deleted and self.is_cluster:
            self.client.zrem(self.keys.owner_index(owner_v), session_id)
        if deleted:
            signals.session_deleted.send(sender=ConversationStore, session_id=session_id, owner=owner)
        return deleted

    def list_sessions(self, *, owner: str | None = None) -> list[SessionSummary]:
        """Every live session of ``owner``, most recently active first (walks the index page by page)."""
        sessions: list[SessionSummary] = []
        cursor: str | None = None
        while True:
            page = self.list_sessions_page(owner=owner, limit=500, cursor=cursor)
            sessions.extend(page.sessions)
            if page.next_cursor is None:
                return sessions
            cursor = page.next_cursor

    # ------------------------------------------------------------------ beyond the seed

    @_translate_redis_errors
    def append_message(
        self,
        session_id: str,
        *,
        role: str,
        content: str,
        sources: list[dict[str, Any]] | None = None,
        owner: str | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """Append one message in one round trip and return it as stored.

        Raises ``SessionNotFound`` (missing, expired, another owner's), ``SessionFull``, ``InvalidInput``,
        or ``IdempotencyConflict`` when ``idempotency_key`` was used before with another message. A
        repeat with the same key and message returns the first call's message and appends nothing.
        """
        cfg = self.config
        owner_v = validation.owner_value(owner)
        role_v = validation.role_value(role, roles=cfg.roles)
        content_v = validation.content_value(content, max_length=cfg.max_message_length)
        sources_b = validation.sources_bytes(
            sources,
            max_sources=cfg.max_sources,
            max_bytes=cfg.max_sources_bytes,
            max_depth=cfg.max_json_depth,
        )
        key_digest = ""
        if idempotency_key is not None:
            key_digest = digest(validation.idempotency_key_value(idempotency_key))
        if not validation.is_session_id(session_id):
            raise SessionNotFound(session_id)
        body = (
            b'"role":'
            + orjson.dumps(role_v)
            + b',"content":'
            + orjson.dumps(content_v)
            + b',"sources":'
            + sources_b
            + b"}"
        )
        fingerprint = digest(body.decode()) if key_digest else ""
        reply = self._append(
            keys=[*self.keys.session_keys(session_id), *self._index_keys(owner_v)],
            args=[owner_v, body, self.ttl_ms, cfg.max_messages, session_id, key_digest, fingerprint],
        )
        status = reply[0]
        if status > 0:
            if self.is_cluster:
                index = self.keys.owner_index(owner_v)
                self.client.zadd(index, {session_id: int(reply[1])})
                self.client.pexpire(index, self.ttl_ms)
            message = Message(
                id=int(status),
                role=role_v,
                content=content_v,
                sources=orjson.loads(sources_b),
                created_at=from_millis(reply[1]),
            )
            signals.message_appended.send(
                sender=ConversationStore, session_id=session_id, message=message, owner=owner
            )
            return message
        if status == -1:
            raise SessionNotFound(session_id)
        if status == -2:
            raise SessionFull(f"This session already holds {cfg.max_messages} messages.")
        if status == -3:
            raise IdempotencyConflict("This idempotency key was used with a different message.")
        replayed = self._decode_message(reply[1], session_id) if len(reply) > 1 and reply[1] else None
        if replayed is None:
            raise SessionNotFound(session_id)
        return replayed

    @_translate_redis_errors
    def get_messages(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        last: int | None = None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[Message]:
        """A window of messages, oldest first, by message id (position, starting at 1).

        ``last=N``: the newest N. ``after=A``: ids above A. ``before=B``: the newest ids below B.
        Both ``after`` and ``before``: ids between them. Neither: from the first. At most ``limit``
        messages (ignored with ``last``). Costs O(window), whatever the history's length.
        """
        owner_v = validation.owner_value(owner)
        limit = validation.positive_int(limit, field="limit")
        if last is not None:
            last = validation.positive_int(last, field="last")
            start, stop = -last, -1
        else:
            low = 0 if after is None else validation.position(after, field="after")
            if before is None:
                start, stop = low, low + limit - 1
            else:
                high = validation.position(before, field="before") - 1  # highest id wanted
                if high <= low:
                    start, stop = 1, 0  # an empty range
                else:
                    start, stop = max(low, high - limit), high - 1
        found = self._read_session(session_id, owner_v, str(start), str(stop), details=False)
        if found is None:
            raise SessionNotFound(session_id)
        return found[1]

    @_translate_redis_errors
    def count_messages(self, session_id: str, *, owner: str | None = None) -> int:
        """How many messages the session holds. Raises ``SessionNotFound``."""
        found = self._read_session(session_id, validation.owner_value(owner), "", "", details=False)
        if found is None:
            raise SessionNotFound(session_id)
        return found[0].message_count

    @_translate_redis_errors
    def get_session_summary(self, session_id: str, *, owner: str | None = None) -> SessionSummary:
        """The session without its messages. Raises ``SessionNotFound``."""
        found = self._read_session(session_id, validation.owner_value(owner), "", "", details=True)
        if found is None:
            raise SessionNotFound(session_id)
        return found[0]

    @_translate_redis_errors
    def update_session(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        title: str = UNSET,
        metadata: dict[str, Any] = UNSET,
    ) -> SessionSummary:
        """Replace the title and/or the metadata; renews the session's TTL. Raises ``SessionNotFound``."""
        cfg = self.config
        owner_v = validation.owner_value(owner)
        set_title = title is not UNSET
        set_metadata = metadata is not UNSET
        title_v = validation.title_value(title, max_length=cfg.max_title_length) if set_title else ""
        metadata_b = (
            validation.metadata_bytes(
                metadata, max_bytes=cfg.max_metadata_bytes, max_depth=cfg.max_json_depth
            )
            if set_metadata
            else b""
        )
        if not validation.is_session_id(session_id):
            raise SessionNotFound(session_id)
        reply = self._update(
            keys=[*self.keys.session_keys(session_id), *self._index_keys(owner_v)],
            args=[
                owner_v,
                self.ttl_ms,
                session_id,
                "1" if set_title else "0",
                title_v,
                "1" if set_metadata else "0",
                metadata_b,
            ],
        )
        if reply is None:
            raise SessionNotFound(session_id)
        pttl, title_raw, metadata_raw, created_at, updated_at, count = reply
        if self.is_cluster:
            index = self.keys.owner_index(owner_v)
            self.client.zadd(index, {session_id: int(updated_at)})
            self.client.pexpire(index, self.ttl_ms)
        return self._summary(
            session_id,
            owner_v,
            pttl=int(pttl),
            title=title_raw,
            metadata=metadata_raw,
            created_at=created_at,
            updated_at=updated_at,
            count=count,
        )

    @_translate_redis_errors
    def list_sessions_page(
        self, *, owner: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> SessionPage:
        """One page of the owner's sessions, most recently active first; pass ``next_cursor`` on.

        Costs O(page) round-trip work whatever the number of sessions in Redis. Index entries whose
        session has expired or been deleted are dropped from the index as the listing meets them.
        """
        owner_v = validation.owner_value(owner)
        limit = validation.positive_int(limit, field="limit", maximum=1000)
        index = self.keys.owner_index(owner_v)
        max_score: int | str = "+inf"
        after_id: str | None = None
        if cursor is not None:
            max_score, after_id = decode_cursor(cursor)
        found: list[tuple[SessionSummary, int]] = []
        offset = 0
        batch = limit + 1
        while len(found) <= limit:
            entries = self.client.zrevrangebyscore(
                index, max_score, "-inf", start=offset, num=batch, withscores=True
            )
            offset += len(entries)
            candidates: list[tuple[str, int]] = []
            for raw_id, raw_score in entries:
                session_id, score = _text(raw_id), int(raw_score)
                # Members sharing the cursor's score come in reverse order of id: skip those already shown.
                if after_id is not None and score == max_score and session_id >= after_id:
                    continue
                if SESSION_ID_RE.match(session_id):
                    candidates.append((session_id, score))
            summaries = self._summaries([sid for sid, _ in candidates], owner_v)
            stale = []
            for (session_id, score), summary in zip(candidates, summaries, strict=True):
                if summary is None:
                    stale.append((session_id, score))
                else:
                    found.append((summary, score))
            self._prune_index(index, stale)
            if len(entries) < batch:
                break
        if len(found) > limit:
            last_summary, last_score = found[limit - 1]
            return SessionPage(
                sessions=[s for s, _ in found[:limit]],
                next_cursor=encode_cursor(last_score, last_summary.id),
            )
        return SessionPage(sessions=[s for s, _ in found], next_cursor=None)

    def _summaries(self, session_ids: list[str], owner: str) -> list[SessionSummary | None]:
        if not session_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for session_id in session_ids:
            meta = self.keys.meta(session_id)
            pipe.hmget(meta, "owner", "title", "metadata", "created_at", "updated_at", "count")
            pipe.pttl(meta)
        replies = pipe.execute()
        summaries: list[SessionSummary | None] = []
        for i, session_id in enumerate(session_ids):
            fields, pttl = replies[2 * i], replies[2 * i + 1]
            stored_owner = fields[0]
            if stored_owner is None or _text(stored_owner) != owner:
                summaries.append(None)
                continue
            summaries.append(
                self._summary(
                    session_id,
                    owner,
                    pttl=int(pttl),
                    title=fields[1],
                    metadata=fields[2],
                    created_at=fields[3],
                    updated_at=fields[4],
                    count=fields[5],
                )
            )
        return summaries

    def _prune_index(self, index: str, stale: list[tuple[str, int]]) -> None:
        if not stale:
            return
        if self.is_cluster:
            # A create adds the index entry before writing the session: give it time to land.
            horizon = int(time.time() * 1000) - _CLUSTER_INDEX_GRACE_MS
            stale = [(sid, score) for sid, score in stale if score < horizon]
        if stale:
            self.client.zrem(index, *[sid for sid, _ in stale])

    @_translate_redis_errors
    def delete_owner_sessions(self, owner: str | None) -> int:
        """Erase every session of ``owner`` (right to erasure). Returns how many were deleted."""
        owner_v = validation.owner_value(owner)
        index = self.keys.owner_index(owner_v)
        deleted = 0
        while True:
            batch = [_text(raw) for raw in self.client.zrange(index, 0, 199)]
            if not batch:
                break
            for session_id in batch:
                if SESSION_ID_RE.match(session_id) and self.delete_session(session_id, owner=owner):
                    deleted += 1
            self.client.zrem(index, *batch)
        self.client.delete(index)
        return deleted

    def iter_sessions(self, *, owner: str | None = None) -> Iterator[SessionSummary]:
        """Walk the owner's sessions page by page without holding them all."""
        cursor: str | None = None
        while True:
            page = self.list_sessions_page(owner=owner, limit=200, cursor=cursor)
            yield from page.sessions
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


def _fields(summary: SessionSummary) -> dict[str, Any]:
    return {name: getattr(summary, name) for name in SessionSummary.__dataclass_fields__}


__all__ = [
    "UNOWNED",
    "UNSET",
    "ConversationStore",
    "StoreConfig",
    "decode_cursor",
    "encode_cursor",
    "new_session_id",
]

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
import redis
from django.core.exceptions import ImproperlyConfigured
from redis.cluster import RedisCluster

from conversations import signals
from conversations.conf import DEFAULTS, conf
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
from .records import Message, Session, SessionPage, SessionSummary, as_text, from_millis

logger = logging.getLogger("conversations")

P = ParamSpec("P")
R = TypeVar("R")

# redis-py 5.3 deprecated naming a command when taking a connection from the pool; 5.0 requires it.
_POOL_TAKES_NO_COMMAND = tuple(int(part) for part in redis.__version__.split(".")[:2]) >= (5, 3)

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs a command in C; redis-py's own packer walks every argument in Python first
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is an optional extra
    _hiredis_pack = None


def _pack_commands(conn: Any, commands: tuple[tuple[Any, ...], ...]) -> Any:
    """The wire bytes of ``commands``: hiredis's packer where the connection encodes as UTF-8 (what it
    would do too), else the connection's own."""
    if _hiredis_pack is not None and conn.encoder.encoding == "utf-8":
        return [b"".join(_hiredis_pack(command) for command in commands)]
    return conn.pack_commands(commands)


# Bound once: decoding a window of messages calls it per message.
_fromtimestamp = datetime.fromtimestamp

#: Sentinel for "leave this field unchanged" in ``update_session``.
UNSET: Any = object()

# How long a cluster-mode index entry may point at a session not yet written before a listing prunes it.
CLUSTER_INDEX_GRACE_MS = 10_000
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
        except redis.RedisError as exc:
            error = store_error(exc)
            if error is None:
                raise
            raise error from exc

    return wrapper


def store_error(exc: redis.RedisError) -> StoreUnavailable | None:
    """The store's error for a redis-py failure, or None to let it through unchanged. Used by
    ``_translate_redis_errors``, inline by the hottest methods, and by the operator tools."""
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return StoreUnavailable(f"Cannot reach Redis: {exc}")
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM" in text.split(" ", 2)[:2]:
            return StoreOutOfMemory(f"Redis is out of memory: {text}")
        if isinstance(exc, redis.exceptions.ReadOnlyError) or text.startswith(
            ("READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS")
        ):
            return StoreUnavailable(f"Redis cannot serve this now: {text}")
    return None


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The limits and names a store works with. ``from_settings()`` reads ``settings.CONVERSATIONS``."""

    key_prefix: str = DEFAULTS["KEY_PREFIX"]
    session_ttl: int = DEFAULTS["SESSION_TTL"]
    max_message_length: int = DEFAULTS["MAX_MESSAGE_LENGTH"]
    max_messages: int = DEFAULTS["MAX_MESSAGES"]
    max_sources: int = DEFAULTS["MAX_SOURCES"]
    max_sources_bytes: int = DEFAULTS["MAX_SOURCES_BYTES"]
    max_metadata_bytes: int = DEFAULTS["MAX_METADATA_BYTES"]
    max_json_depth: int = DEFAULTS["MAX_JSON_DEPTH"]
    max_title_length: int = DEFAULTS["MAX_TITLE_LENGTH"]
    roles: tuple[str, ...] = tuple(DEFAULTS["ROLES"])
    replica_acks: int = DEFAULTS["REPLICA_ACKS"]
    replica_ack_timeout_ms: int = int(DEFAULTS["REPLICA_ACK_TIMEOUT"] * 1000)

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
            replica_acks=conf.REPLICA_ACKS,
            replica_ack_timeout_ms=max(1, round(conf.REPLICA_ACK_TIMEOUT * 1000)),
        )


def new_session_id() -> str:
    """128 random bits, URL-safe: not guessable, not sequential."""
    return secrets.token_urlsafe(16)


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
        if self.is_cluster and self.config.replica_acks:
            # WAIT must follow the write on the same connection; a cluster client cannot promise that.
            raise ImproperlyConfigured("CONVERSATIONS['REPLICA_ACKS'] is not supported on a Redis Cluster.")
        # On a cluster the index outlives its newest session by the grace period: the index is renewed
        # just before (create) or just after (append, update) the session, never in the same script.
        self._index_ttl_ms = self.ttl_ms + (CLUSTER_INDEX_GRACE_MS if self.is_cluster else 0)
        self._create = client.register_script(scripts.CREATE)
        self._append = client.register_script(scripts.APPEND)
        self._update = client.register_script(scripts.UPDATE)
        self._delete = client.register_script(scripts.DELETE)
        self._read = client.register_script(scripts.READ)
        self._window_script = client.register_script(scripts.WINDOW)
        self._layout_written = False
        # On a plain redis-py client (django-redis's, or one over Sentinel) commands go out on a pooled
        # connection packed by hand (``_pipelined``): scripts and listing summaries. Anything else (a
        # cluster, fakeredis, a custom client) goes through the client's own command path.
        pool = getattr(client, "connection_pool", None)
        plain = type(client) is redis.Redis and getattr(client, "connection", None) is None
        self._pool = pool if plain and isinstance(pool, redis.ConnectionPool) else None

    # ------------------------------------------------------------------ helpers

    def _pipelined(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` in one round trip on a pooled connection, packed and read by hand.

        Much cheaper for reads than a script, which must copy every reply into Lua and back out
        (reading 20 messages costs Redis about 15 µs that way, about 2 µs this way), and than redis-py's
        ``Pipeline`` object, which costs more in Python than the round trip. Not atomic: callers make
        sure a write landing between two of the commands cannot mislead them. Retries connection
        failures as the client's own commands do; an error drops the connection, so a half-read reply
        never reaches the next caller.
        """
        pool = self._pool
        assert pool is not None, "callers check self._pool"
        conn: Any = pool.get_connection() if _POOL_TAKES_NO_COMMAND else pool.get_connection(commands[0][0])
        packed = _pack_commands(conn, commands)

        def send() -> list[Any]:
            conn.send_packed_command(packed)
            return [conn.read_response() for _ in commands]  # an error reply raises

        try:
            replies: list[Any] = conn.retry.call_with_retry(send, lambda _error: conn.disconnect())
        except BaseException:
            conn.disconnect()  # replies may be left unread: never hand this connection on
            raise
        finally:
            pool.release(conn)
        return replies

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA the script by its cached digest, loading it first if this Redis lost it (a restart,
        a failover). Every request goes through here, and calling the redis-py ``Script`` object costs
        more (it copies keys and args into new tuples and checks for a pipeline on every call)."""
        if self._pool is not None:
            try:
                return self._pipelined(("EVALSHA", script.sha, len(keys), *keys, *args))[0]
            except redis.exceptions.NoScriptError:
                script.sha = self.client.script_load(script.script)
                return self._pipelined(("EVALSHA", script.sha, len(keys), *keys, *args))[0]
        try:
            return self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            script.sha = self.client.script_load(script.script)
            return self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    def _write(self, script: Any, *, keys: list[str], args: list[Any]) -> Any:
        """Run a write script; with ``replica_acks``, also confirm that many replicas have it.

        WAIT goes in the same pipeline (same connection, same round trip) as the script, so it waits
        for exactly this write. A write that is not confirmed in time raises ``StoreUnavailable``: it
        is on the primary but could be lost if the primary fails now (retry with an idempotency key).
        """
        acks = self.config.replica_acks
        if not acks:
            return self._run(script, keys, args)
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", acks, self.config.replica_ack_timeout_ms)
            try:
                reply, confirmed = pipe.execute()
            except redis.exceptions.NoScriptError:
                # Not run at all (a restarted or new primary): load it and try once more.
                if attempt:
                    raise
                self.client.script_load(script.script)
                continue
            self._check_acks(int(confirmed))
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _confirm_replicated(self, key: str) -> None:
        """With ``replica_acks``: before answering from data an earlier, unconfirmed call wrote, make a
        write of our own (renew ``key``'s TTL) and WAIT for it, which confirms everything before it."""
        if not self.config.replica_acks:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.pexpire(key, self.ttl_ms)
        pipe.execute_command("WAIT", self.config.replica_acks, self.config.replica_ack_timeout_ms)
        self._check_acks(int(pipe.execute()[1]))

    def _check_acks(self, confirmed: int) -> None:
        if confirmed < self.config.replica_acks:
            raise StoreUnavailable(
                f"Only {confirmed} of {self.config.replica_acks} replicas confirmed the write in time; "
                "it may be lost if the primary fails."
            )

    def _cluster_index_after_write(
        self, owner: str, session_id: str, score: int | None, *, later_only: bool = True
    ) -> None:
        """Cluster mode: update the owner's index after the session's own write (``score`` None: the
        session was deleted; else its last activity, on Redis's clock).

        That write is done, so a failure here is logged, not raised: failing the call now would invite
        a retry that appends twice. The entry has existed since the create, so the worst outcomes are a
        stale score or an entry for a deleted session (listings prune those), or an index expiring
        before its session, which the session's next write or ``conversations_report --repair`` undoes.
        """
        index = self.keys.owner_index(owner)
        try:
            if score is None:
                self.client.zrem(index, session_id)
                return
            pipe = self.client.pipeline(transaction=False)  # one slot: one round trip
            # GT: of two racing appends, the later activity wins whichever call lands last.
            pipe.zadd(index, {session_id: score}, gt=later_only)
            pipe.pexpire(index, self._index_ttl_ms)
            pipe.execute()
        except (*_UNAVAILABLE_ERRORS, redis.ResponseError) as exc:
            logger.warning("Could not update the owner index %s for session %s: %s", index, session_id, exc)

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

    def _decode_messages(self, raws: list[bytes], session_id: str) -> list[Message]:
        """A window of stored messages, decoded in one orjson pass over the joined list (a pass per
        message, and the checks and conversions of ``_decode_message``, cost more than the round trip
        that fetched them). Anything unexpected sends the whole window down ``_decode_message``'s
        careful path, which skips and logs just the corrupt ones."""
        if not raws:
            return []
        try:
            items = orjson.loads(b"[" + b",".join(raws) + b"]")
            if len(items) == len(raws):
                messages = []
                for item in items:
                    id_, created_at = item["id"], item["created_at"]
                    role, content, sources = item["role"], item["content"], item["sources"]
                    if not (
                        type(id_) is int
                        and type(created_at) is int
                        and type(role) is str
                        and type(content) is str
                        and type(sources) is list
                    ):
                        break
                    created = _fromtimestamp(created_at / 1000, UTC)
                    messages.append(Message(id_, role, content, sources, created))
                else:
                    return messages
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
            pass
        return [m for raw in raws if (m := self._decode_message(raw, session_id)) is not None]

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
        messages: list[Message] | None = None,
    ) -> SessionSummary:
        """A summary of the stored fields, or a ``Session`` carrying ``messages`` when they are given."""
        # The expiry is reckoned from now, so it stays true even if the TTL setting changed since the write.
        expires_at = from_millis(time.time() * 1000 + pttl) if pttl >= 0 else None
        fields: dict[str, Any] = {
            "id": session_id,
            "owner": owner or None,
            "title": as_text(title),
            "metadata": self._decode_metadata(metadata, session_id),
            "created_at": from_millis(created_at or 0),
            "updated_at": from_millis(updated_at or 0),
            "expires_at": expires_at,
            "message_count": int(count or 0),
        }
        return SessionSummary(**fields) if messages is None else Session(**fields, messages=messages)

    def _read_session(
        self,
        session_id: Any,
        owner: str,
        start: str,
        stop: str,
        *,
        details: bool,
        floor: str = "",
        as_session: bool = False,
    ) -> tuple[SessionSummary, list[Message]] | None:
        if not validation.is_session_id(session_id):
            return None
        reply = self._run(
            self._read,
            [self.keys.meta(session_id), self.keys.messages(session_id)],
            [owner, start, stop, "1" if details else "0", floor],
        )
        if reply is None:
            return None
        pttl, created_at, updated_at, count, title, metadata = reply[:6]
        messages = self._decode_messages(reply[6] if len(reply) > 6 and reply[6] else [], session_id)
        summary = self._summary(
            session_id,
            owner,
            pttl=int(pttl),
            title=title,
            metadata=metadata,
            created_at=created_at,
            updated_at=updated_at,
            count=count,
            messages=messages if as_session else None,
        )
        return summary, messages

    def write_layout_version(self) -> None:
        """Mark the key layout's version (once per store) so later layouts can migrate."""
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
            fingerprint = digest(title_v.encode("utf-8", "surrogatepass") + b"\x00" + metadata_b)
            prior = self._claim_create_key(owner_v, key, fingerprint, session_id)
            if prior is not None:
                return prior
        self.write_layout_version()
        for _ in range(_CREATE_RETRIES):
            if self.is_cluster:
                # Listed before it exists, so it is never live and unlisted (see the module docstring).
                index = self.keys.owner_index(owner_v)
                pipe = self.client.pipeline(transaction=False)  # one slot: one round trip
                pipe.zadd(index, {session_id: int(time.time() * 1000)})
                pipe.pexpire(index, self._index_ttl_ms)
                pipe.execute()
            created = self._write(
                self._create,
                keys=[self.keys.meta(session_id), *self._index_keys(owner_v)],
                args=[owner_v, title_v, metadata_b, self.ttl_ms, session_id],
            )
            if created is not None:
                if self.is_cluster:
                    # The entry was scored on this machine's clock; listings order by Redis's, like
                    # ``updated_at``. Nobody else knows the id yet, so no later activity can be undone.
                    self._cluster_index_after_write(owner_v, session_id, int(created), later_only=False)
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
        if signals.session_created.receivers:  # skips building the call when nobody listens
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
            prior_fingerprint, _, prior_id = as_text(raw).partition(" ")
            if prior_fingerprint != fingerprint:
                raise IdempotencyConflict("This idempotency key was used with a different request.")
            session = self.get_session(prior_id, owner=owner or None)
            if session is not None:
                self._confirm_replicated(redis_key)
                return session
            # The first call is still creating it, or its session is gone: wait briefly, then start over.
            time.sleep(0.05)
            if self._read_session(prior_id, owner, "", "", details=False) is None:
                self.client.delete(redis_key)
        raise StoreUnavailable("Could not settle an idempotent create.")  # pragma: no cover

    @_translate_redis_errors
    def get_session(self, session_id: str, *, owner: str | None = None) -> Session | None:
        """The session with all its messages, or None if it is missing, expired or another owner's."""
        found = self._read_session(
            session_id, validation.owner_value(owner), "0", "-1", details=True, as_session=True
        )
        if found is None:
            return None
        assert isinstance(found[0], Session)
        return found[0]

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
            self._write(
                self._delete,
                keys=[*self.keys.session_keys(session_id), *self._index_keys(owner_v)],
                args=[owner_v, session_id],
            )
        )
        if deleted:
            if self.is_cluster:
                self._cluster_index_after_write(owner_v, session_id, None)
            if signals.session_deleted.receivers:
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
        # (Most messages have no sources: skip the call, whose answer for None is "[]".)
        sources_b = (
            b"[]"
            if sources is None
            else validation.sources_bytes(
                sources,
                max_sources=cfg.max_sources,
                max_bytes=cfg.max_sources_bytes,
                max_depth=cfg.max_json_depth,
            )
        )
        key_digest = ""
        if idempotency_key is not None:
            key_digest = digest(validation.idempotency_key_value(idempotency_key))
        if not validation.is_session_id(session_id):
            raise SessionNotFound(session_id)
        body = b'"role":%b,"content":%b,"sources":%b}' % (
            orjson.dumps(role_v),
            orjson.dumps(content_v),
            sources_b,
        )
        args: list[Any] = [owner_v, body, self.ttl_ms, cfg.max_messages, session_id]
        if key_digest:
            args += [key_digest, digest(body)]
        keys = [*self.keys.session_keys(session_id), *self._index_keys(owner_v)]
        try:  # what _translate_redis_errors does, inline: this is the hottest path
            reply = self._write(self._append, keys=keys, args=args)
        except redis.RedisError as exc:
            error = store_error(exc)
            if error is None:
                raise
            raise error from exc
        status = reply[0]
        if status > 0:
            if self.is_cluster:
                self._cluster_index_after_write(owner_v, session_id, int(reply[1]))
            created_at = from_millis(reply[1])
            sources_v = [] if sources is None else orjson.loads(sources_b)
            message = Message(status, role_v, content_v, sources_v, created_at)  # positional: cheaper
            if signals.message_appended.receivers:  # skips building the call on the hottest path
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
            return self._window(session_id, owner_v, -validation.positive_int(last, field="last"), -1)
        low = 0 if after is None else validation.position(after, field="after")
        if before is None:  # a fixed range: no need for the READ script, which reads the count first
            return self._window(session_id, owner_v, low, low + limit - 1)
        high = validation.position(before, field="before") - 1  # highest id wanted
        if high <= low:
            return self._window(session_id, owner_v, 1, 0)  # an empty range (the session must still exist)
        # ``before`` may lie past the last message: the READ script slides the window down to it.
        start, stop = max(low, high - limit), high - 1
        found = self._read_session(session_id, owner_v, str(start), str(stop), details=False, floor=str(low))
        if found is None:
            raise SessionNotFound(session_id)
        return found[1]

    def _window(self, session_id: str, owner: str, start: int, stop: int) -> list[Message]:
        """The messages at list indexes ``start``..``stop`` (LRANGE's, negative from the end): the newest
        N (what every chat screen reads) or a page after a position, in one WINDOW script.

        A script rather than HMGET + LRANGE in one pipelined round trip (about 0.3 x a GET cheaper):
        the script compares owners before it reads a message, so another owner's session answers
        exactly like a missing one — the same commands and the same empty reply — and its size
        cannot tell an id holder that the session exists.
        """
        if not validation.is_session_id(session_id):
            raise SessionNotFound(session_id)
        meta, msgs = self.keys.meta(session_id), self.keys.messages(session_id)
        raws = self._run(self._window_script, [meta, msgs], [owner, str(start), str(stop)])
        if raws is None:
            raise SessionNotFound(session_id)
        return self._decode_messages(raws, session_id)

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
        reply = self._write(
            self._update,
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
            self._cluster_index_after_write(owner_v, session_id, int(updated_at))
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
                session_id, score = as_text(raw_id), int(raw_score)
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
            # Pruned entries leave the index, so the next batch starts that many places earlier.
            offset -= self._prune_index(index, stale)
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
        wanted = ("owner", "title", "metadata", "created_at", "updated_at", "count")
        commands: list[tuple[Any, ...]] = []
        for session_id in session_ids:
            meta = self.keys.meta(session_id)
            commands += [("HMGET", meta, *wanted), ("PTTL", meta), ("LLEN", self.keys.messages(session_id))]
        if self._pool is not None:
            replies = self._pipelined(*commands)
        else:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = pipe.execute()
        summaries: list[SessionSummary | None] = []
        for i, session_id in enumerate(session_ids):
            fields, pttl, length = replies[3 * i : 3 * i + 3]
            stored_owner = fields[0]
            # A list shorter than ``count`` means an evicting Redis dropped it: gone, as the scripts say.
            if stored_owner is None or as_text(stored_owner) != owner or as_text(fields[5]) != str(length):
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

    def _prune_index(self, index: str, stale: list[tuple[str, int]]) -> int:
        """Drop index entries whose session is gone; returns how many were dropped."""
        if not stale:
            return 0
        if self.is_cluster:
            # A create adds the index entry before writing the session: give it time to land.
            horizon = int(time.time() * 1000) - CLUSTER_INDEX_GRACE_MS
            stale = [(sid, score) for sid, score in stale if score < horizon]
        if not stale:
            return 0
        return int(self.client.zrem(index, *[sid for sid, _ in stale]))

    @_translate_redis_errors
    def delete_owner_sessions(self, owner: str | None) -> int:
        """Erase every session of ``owner`` (right to erasure). Returns how many were deleted."""
        owner_v = validation.owner_value(owner)
        index = self.keys.owner_index(owner_v)
        deleted = 0
        kept = 0  # entries left in place on purpose; they stay at the head of the index
        while True:
            entries = self.client.zrange(index, kept, kept + 199, withscores=True)
            if not entries:
                return deleted
            horizon = int(time.time() * 1000) - CLUSTER_INDEX_GRACE_MS
            gone = []
            for raw_id, score in entries:
                session_id = as_text(raw_id)
                if SESSION_ID_RE.match(session_id) and self.delete_session(session_id, owner=owner):
                    deleted += 1
                elif self.is_cluster and score >= horizon:
                    # A create in flight lists its session just before writing it: dropping the entry
                    # now would leave that session unlisted. It was not there to erase; leave it be.
                    kept += 1
                else:
                    gone.append(session_id)
            # Never DEL the whole index: a session created meanwhile must stay listed.
            if gone:
                self.client.zrem(index, *gone)


__all__ = [
    "UNOWNED",
    "UNSET",
    "ConversationStore",
    "StoreConfig",
    "decode_cursor",
    "encode_cursor",
    "new_session_id",
]

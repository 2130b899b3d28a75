"""``ConversationStore``: chat sessions in Redis, one round trip per write, safe under concurrency.

How it is built (see each module's docstring):

* ``keys``: every key name, and the layout (a session's keys share one hash tag).
* ``scripts``: every Lua script, in one registry. Each write is one script over the session's keys:
  it checks that the session exists and belongs to the caller, writes, renews the TTL of *every* key
  of the session and publishes the change, so a session is never half-written and never outlives
  part of itself. An expired or deleted session is never recreated by a late write.
* ``validation`` and ``codec``: input checks, and the one wire format of messages, summaries,
  cursors and events.
* ``operations``: each public method's work, sans I/O (prepare, one step, parse), as a generator.
* ``transport_sync`` / ``transport_async``: the only code that does I/O; they run the operations'
  steps on redis-py or redis.asyncio and translate redis-py errors (``errors``).
* ``topology``: single Redis or Redis Cluster, the one place that knows how the owner index is kept.

Every public method ``X`` has a native coroutine twin ``aX`` with the same arguments, results and
errors, running the same operation on the running event loop's ``redis.asyncio`` client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from conversations.conf import DEFAULTS, conf
from conversations.exceptions import SessionNotFound

from . import operations as ops
from .codec import Event
from .keys import KeyLayout
from .operations import UNSET, Context, new_session_id
from .protocol import Operation
from .records import Message, Session, SessionPage, SessionSummary
from .topology import topology_for
from .transport_async import AsyncTransport
from .transport_sync import SyncTransport


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The limits and names a store works with. ``from_settings()`` reads ``settings.CONVERSATIONS``."""

    key_prefix: str = DEFAULTS["KEY_PREFIX"]
    session_ttl: int = DEFAULTS["SESSION_TTL"]
    max_message_length: int = DEFAULTS["MAX_MESSAGE_LENGTH"]
    max_messages: int = DEFAULTS["MAX_MESSAGES"]
    max_sources: int = DEFAULTS["MAX_SOURCES"]
    max_sources_bytes: int = DEFAULTS["MAX_SOURCES_BYTES"]
    max_message_data_bytes: int = DEFAULTS["MAX_MESSAGE_DATA_BYTES"]
    max_metadata_bytes: int = DEFAULTS["MAX_METADATA_BYTES"]
    max_json_depth: int = DEFAULTS["MAX_JSON_DEPTH"]
    max_title_length: int = DEFAULTS["MAX_TITLE_LENGTH"]
    roles: tuple[str, ...] = tuple(DEFAULTS["ROLES"])
    replica_acks: int = DEFAULTS["REPLICA_ACKS"]
    replica_ack_timeout_ms: int = int(DEFAULTS["REPLICA_ACK_TIMEOUT"] * 1000)
    event_history: int = DEFAULTS["EVENT_HISTORY"]

    @classmethod
    def from_settings(cls) -> StoreConfig:
        return cls(
            key_prefix=conf.KEY_PREFIX,
            session_ttl=conf.SESSION_TTL,
            max_message_length=conf.MAX_MESSAGE_LENGTH,
            max_messages=conf.MAX_MESSAGES,
            max_sources=conf.MAX_SOURCES,
            max_sources_bytes=conf.MAX_SOURCES_BYTES,
            max_message_data_bytes=conf.MAX_MESSAGE_DATA_BYTES,
            max_metadata_bytes=conf.MAX_METADATA_BYTES,
            max_json_depth=conf.MAX_JSON_DEPTH,
            max_title_length=conf.MAX_TITLE_LENGTH,
            roles=conf.ROLES,
            replica_acks=conf.REPLICA_ACKS,
            replica_ack_timeout_ms=max(1, round(conf.REPLICA_ACK_TIMEOUT * 1000)),
            event_history=conf.EVENT_HISTORY,
        )


def _no_async_client() -> Any:
    raise ImproperlyConfigured(
        "This store was built without an async client: pass async_client_factory= to ConversationStore, "
        "or use get_store()."
    )


class ConversationStore:
    """Conversations in Redis, on a redis-py client (and, for the ``a…`` twins, a redis.asyncio one).

    ``get_store()`` builds one from settings. ``async_client_factory`` is called by each async call
    and returns the ``redis.asyncio`` client of the running loop (``get_store()`` passes
    ``conversations.clients.get_async_redis_client``).
    """

    def __init__(
        self,
        client: Any,
        config: StoreConfig | None = None,
        *,
        async_client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.client = client
        self.config = cfg = config or StoreConfig()
        self.keys = KeyLayout(cfg.key_prefix)
        self.ttl_ms = cfg.session_ttl * 1000
        self.topology = topology_for(client, self.keys, self.ttl_ms)
        if self.topology.cluster and cfg.replica_acks:
            # WAIT must follow the write on the same connection; a cluster client cannot promise that.
            raise ImproperlyConfigured("CONVERSATIONS['REPLICA_ACKS'] is not supported on a Redis Cluster.")
        self.ctx = Context(
            config=cfg,
            keys=self.keys,
            topology=self.topology,
            ttl_ms=self.ttl_ms,
            event_mode=self.topology.publish_mode if cfg.event_history > 0 else "",
            event_history=max(cfg.event_history, 1),
        )
        acks = {"replica_acks": cfg.replica_acks, "replica_ack_timeout_ms": cfg.replica_ack_timeout_ms}
        self.sync = SyncTransport(client, **acks)
        self.aio = AsyncTransport(async_client_factory or _no_async_client, **acks)
        self._layout_written = [False]

    @property
    def is_cluster(self) -> bool:
        return self.topology.cluster

    def write_layout_version(self) -> None:
        """Mark the key layout's version in Redis (once per store; the import calls it)."""
        self.sync.run(ops.write_layout(self.ctx, self._layout_written))

    # ------------------------------------------------------------------ the seed's five methods

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
        first call created instead of creating another, for as long as that session lives; the same
        key with other input raises ``IdempotencyConflict``.
        """
        return self.sync.run(self._create(metadata, owner, title, idempotency_key))

    async def acreate_session(
        self,
        metadata: dict[str, Any] | None = None,
        *,
        owner: str | None = None,
        title: str = "",
        idempotency_key: str | None = None,
    ) -> Session:
        return await self.aio.run(self._create(metadata, owner, title, idempotency_key))

    def _create(self, metadata: Any, owner: Any, title: Any, idempotency_key: Any) -> Operation[Session]:
        return ops.create_session(
            self.ctx,
            metadata,
            owner=owner,
            title=title,
            idempotency_key=idempotency_key,
            layout_written=self._layout_written,
            sender=ConversationStore,
        )

    def get_session(self, session_id: str, *, owner: str | None = None) -> Session | None:
        """The session with all its messages, or None if it is missing, expired or another owner's."""
        return self.sync.run(ops.get_session(self.ctx, session_id, owner=owner))

    async def aget_session(self, session_id: str, *, owner: str | None = None) -> Session | None:
        return await self.aio.run(ops.get_session(self.ctx, session_id, owner=owner))

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

    async def asave_message(
        self,
        session_id: str,
        *,
        role: str,
        content: str,
        sources: list[dict[str, Any]] | None = None,
        owner: str | None = None,
    ) -> Session | None:
        try:
            await self.aappend_message(session_id, role=role, content=content, sources=sources, owner=owner)
        except SessionNotFound:
            return None
        return await self.aget_session(session_id, owner=owner)

    def delete_session(self, session_id: str, *, owner: str | None = None) -> bool:
        """Delete a session. True if it existed (and was the owner's), False otherwise."""
        return self.sync.run(ops.delete_session(self.ctx, session_id, owner=owner, sender=ConversationStore))

    async def adelete_session(self, session_id: str, *, owner: str | None = None) -> bool:
        return await self.aio.run(
            ops.delete_session(self.ctx, session_id, owner=owner, sender=ConversationStore)
        )

    def list_sessions(self, *, owner: str | None = None) -> list[SessionSummary]:
        """Every live session of ``owner``, most recently active first (walks the index in chunks)."""
        return self.sync.run(ops.list_sessions(self.ctx, owner=owner))

    async def alist_sessions(self, *, owner: str | None = None) -> list[SessionSummary]:
        return await self.aio.run(ops.list_sessions(self.ctx, owner=owner))

    # ------------------------------------------------------------------ sessions, beyond the seed

    def get_session_summary(self, session_id: str, *, owner: str | None = None) -> SessionSummary:
        """The session without its messages. Raises ``SessionNotFound``."""
        return self.sync.run(ops.get_session_summary(self.ctx, session_id, owner=owner))

    async def aget_session_summary(self, session_id: str, *, owner: str | None = None) -> SessionSummary:
        return await self.aio.run(ops.get_session_summary(self.ctx, session_id, owner=owner))

    def get_session_head(self, session_id: str, *, owner: str | None = None, last: int = 50) -> Session:
        """The session with only its newest ``last`` messages, in one round trip (what a chat screen
        opens with). Raises ``SessionNotFound``."""
        return self.sync.run(ops.get_session_head(self.ctx, session_id, owner=owner, last=last))

    async def aget_session_head(
        self, session_id: str, *, owner: str | None = None, last: int = 50
    ) -> Session:
        return await self.aio.run(ops.get_session_head(self.ctx, session_id, owner=owner, last=last))

    def count_messages(self, session_id: str, *, owner: str | None = None) -> int:
        """How many messages the session holds. Raises ``SessionNotFound``."""
        return self.sync.run(ops.count_messages(self.ctx, session_id, owner=owner))

    async def acount_messages(self, session_id: str, *, owner: str | None = None) -> int:
        return await self.aio.run(ops.count_messages(self.ctx, session_id, owner=owner))

    def update_session(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        title: str = UNSET,
        metadata: dict[str, Any] = UNSET,
    ) -> SessionSummary:
        """Replace the title and/or the metadata; renews the session's TTL. Raises ``SessionNotFound``."""
        return self.sync.run(
            ops.update_session(self.ctx, session_id, owner=owner, title=title, metadata=metadata)
        )

    async def aupdate_session(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        title: str = UNSET,
        metadata: dict[str, Any] = UNSET,
    ) -> SessionSummary:
        return await self.aio.run(
            ops.update_session(self.ctx, session_id, owner=owner, title=title, metadata=metadata)
        )

    def list_sessions_page(
        self, *, owner: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> SessionPage:
        """One page of the owner's sessions, most recently active first; pass ``next_cursor`` on.

        Costs O(page) round-trip work whatever the number of sessions in Redis. Index entries whose
        session has expired or been deleted are dropped from the index as the listing meets them.
        """
        return self.sync.run(ops.list_sessions_page(self.ctx, owner=owner, limit=limit, cursor=cursor))

    async def alist_sessions_page(
        self, *, owner: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> SessionPage:
        return await self.aio.run(ops.list_sessions_page(self.ctx, owner=owner, limit=limit, cursor=cursor))

    def delete_owner_sessions(self, owner: str | None) -> int:
        """Erase every session of ``owner`` (right to erasure). Returns how many were deleted."""
        return self.sync.run(ops.delete_owner_sessions(self.ctx, owner, sender=ConversationStore))

    async def adelete_owner_sessions(self, owner: str | None) -> int:
        return await self.aio.run(ops.delete_owner_sessions(self.ctx, owner, sender=ConversationStore))

    # ------------------------------------------------------------------ messages

    def append_message(
        self,
        session_id: str,
        *,
        role: str,
        content: str,
        sources: list[dict[str, Any]] | None = None,
        owner: str | None = None,
        idempotency_key: str | None = None,
        status: str = "completed",
        data: dict[str, Any] | None = None,
        token_count: int | None = None,
    ) -> Message:
        """Append one message in one round trip and return it as stored.

        ``status`` is ``"completed"``, ``"in_progress"`` (stream the rest in with ``extend_message``)
        or ``"incomplete"``; ``data`` is a JSON object kept verbatim (``MAX_MESSAGE_DATA_BYTES``);
        ``token_count`` is the caller's count, used by ``get_context``.

        Raises ``SessionNotFound`` (missing, expired, another owner's), ``SessionFull``, ``InvalidInput``,
        or ``IdempotencyConflict`` when ``idempotency_key`` was used before with another message (or
        the message it appended has since been removed). A repeat with the same key and message
        returns the first call's message and appends nothing.
        """
        return self.sync.run(
            ops.append_message(
                self.ctx,
                session_id,
                role=role,
                content=content,
                sources=sources,
                owner=owner,
                idempotency_key=idempotency_key,
                status=status,
                data=data,
                token_count=token_count,
                sender=ConversationStore,
            )
        )

    async def aappend_message(
        self,
        session_id: str,
        *,
        role: str,
        content: str,
        sources: list[dict[str, Any]] | None = None,
        owner: str | None = None,
        idempotency_key: str | None = None,
        status: str = "completed",
        data: dict[str, Any] | None = None,
        token_count: int | None = None,
    ) -> Message:
        return await self.aio.run(
            ops.append_message(
                self.ctx,
                session_id,
                role=role,
                content=content,
                sources=sources,
                owner=owner,
                idempotency_key=idempotency_key,
                status=status,
                data=data,
                token_count=token_count,
                sender=ConversationStore,
            )
        )

    def append_messages(
        self,
        session_id: str,
        messages: Iterable[Mapping[str, Any]],
        *,
        owner: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[Message]:
        """Append several messages in one round trip, all or nothing, with consecutive ids.

        Each is a mapping of ``role``, ``content`` and optionally ``sources``, ``status``, ``data``,
        ``token_count``. One invalid message raises ``InvalidInput`` (its ``field`` names it, e.g.
        ``messages[2].role``) and nothing is written.
        """
        return self.sync.run(
            ops.append_messages(
                self.ctx,
                session_id,
                messages,
                owner=owner,
                idempotency_key=idempotency_key,
                sender=ConversationStore,
            )
        )

    async def aappend_messages(
        self,
        session_id: str,
        messages: Iterable[Mapping[str, Any]],
        *,
        owner: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[Message]:
        return await self.aio.run(
            ops.append_messages(
                self.ctx,
                session_id,
                messages,
                owner=owner,
                idempotency_key=idempotency_key,
                sender=ConversationStore,
            )
        )

    def replace_messages(
        self,
        session_id: str,
        messages: Iterable[Mapping[str, Any]],
        *,
        owner: str | None = None,
    ) -> list[Message]:
        """Replace the session's whole history with ``messages`` (possibly none) in one round trip:
        a concurrent reader sees the old history or the new one, never a mix. The new messages get the
        next ids (ids are never reused); they are validated as ``append_messages`` validates, and
        nothing is written when one is invalid. Raises ``SessionNotFound``, ``InvalidInput``."""
        return self.sync.run(
            ops.replace_messages(self.ctx, session_id, messages, owner=owner, sender=ConversationStore)
        )

    async def areplace_messages(
        self,
        session_id: str,
        messages: Iterable[Mapping[str, Any]],
        *,
        owner: str | None = None,
    ) -> list[Message]:
        return await self.aio.run(
            ops.replace_messages(self.ctx, session_id, messages, owner=owner, sender=ConversationStore)
        )

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
        """A window of messages, oldest first, by message id.

        ``last=N``: the newest N. ``after=A``: ids above A. ``before=B``: the newest ids below B.
        Both ``after`` and ``before``: ids between them. Neither: from the first. At most ``limit``
        messages (ignored with ``last``). Costs O(window), whatever the history's length.
        """
        return self.sync.run(
            ops.get_messages(
                self.ctx, session_id, owner=owner, last=last, after=after, before=before, limit=limit
            )
        )

    async def aget_messages(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        last: int | None = None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[Message]:
        return await self.aio.run(
            ops.get_messages(
                self.ctx, session_id, owner=owner, last=last, after=after, before=before, limit=limit
            )
        )

    def get_message(self, session_id: str, message_id: int, *, owner: str | None = None) -> Message:
        """One message. Raises ``SessionNotFound`` or ``MessageNotFound``."""
        return self.sync.run(ops.get_message(self.ctx, session_id, message_id, owner=owner))

    async def aget_message(self, session_id: str, message_id: int, *, owner: str | None = None) -> Message:
        return await self.aio.run(ops.get_message(self.ctx, session_id, message_id, owner=owner))

    def update_message(
        self,
        session_id: str,
        message_id: int,
        *,
        owner: str | None = None,
        content: str = UNSET,
        status: str = UNSET,
        data: dict[str, Any] | None = UNSET,
        token_count: int | None = UNSET,
    ) -> Message:
        """Change one message's content, status, data and/or token count (others stay as they are);
        returns it as now stored. Raises ``SessionNotFound``, ``MessageNotFound``, ``InvalidInput``."""
        return self.sync.run(
            ops.update_message(
                self.ctx,
                session_id,
                message_id,
                owner=owner,
                content=content,
                status=status,
                data=data,
                token_count=token_count,
                sender=ConversationStore,
            )
        )

    async def aupdate_message(
        self,
        session_id: str,
        message_id: int,
        *,
        owner: str | None = None,
        content: str = UNSET,
        status: str = UNSET,
        data: dict[str, Any] | None = UNSET,
        token_count: int | None = UNSET,
    ) -> Message:
        return await self.aio.run(
            ops.update_message(
                self.ctx,
                session_id,
                message_id,
                owner=owner,
                content=content,
                status=status,
                data=data,
                token_count=token_count,
                sender=ConversationStore,
            )
        )

    def extend_message(
        self, session_id: str, message_id: int, text: str, *, owner: str | None = None
    ) -> Message:
        """Append ``text`` to an in-progress message's content, atomically (concurrent extends all
        land). Raises ``MessageNotInProgress`` when its status is not ``in_progress``."""
        return self.sync.run(
            ops.extend_message(self.ctx, session_id, message_id, text, owner=owner, sender=ConversationStore)
        )

    async def aextend_message(
        self, session_id: str, message_id: int, text: str, *, owner: str | None = None
    ) -> Message:
        return await self.aio.run(
            ops.extend_message(self.ctx, session_id, message_id, text, owner=owner, sender=ConversationStore)
        )

    def delete_message(self, session_id: str, message_id: int, *, owner: str | None = None) -> bool:
        """Remove exactly that message; the others keep their ids. False when there is no such
        message. Raises ``SessionNotFound``."""
        return self.sync.run(
            ops.delete_message(self.ctx, session_id, message_id, owner=owner, sender=ConversationStore)
        )

    async def adelete_message(self, session_id: str, message_id: int, *, owner: str | None = None) -> bool:
        return await self.aio.run(
            ops.delete_message(self.ctx, session_id, message_id, owner=owner, sender=ConversationStore)
        )

    def truncate_messages(self, session_id: str, *, after: int, owner: str | None = None) -> int:
        """Remove every message with an id above ``after`` (``after=0`` empties the session, which
        stays); returns how many were removed. Ids are never reused."""
        return self.sync.run(
            ops.truncate_messages(self.ctx, session_id, after=after, owner=owner, sender=ConversationStore)
        )

    async def atruncate_messages(self, session_id: str, *, after: int, owner: str | None = None) -> int:
        return await self.aio.run(
            ops.truncate_messages(self.ctx, session_id, after=after, owner=owner, sender=ConversationStore)
        )

    def pop_message(self, session_id: str, *, owner: str | None = None) -> Message | None:
        """Remove and return the newest message (None when the session has none)."""
        return self.sync.run(ops.pop_message(self.ctx, session_id, owner=owner, sender=ConversationStore))

    async def apop_message(self, session_id: str, *, owner: str | None = None) -> Message | None:
        return await self.aio.run(
            ops.pop_message(self.ctx, session_id, owner=owner, sender=ConversationStore)
        )

    def get_context(
        self, session_id: str, *, max_tokens: int, owner: str | None = None, include_system: bool = True
    ) -> list[Message]:
        """The messages to send a model, oldest first, in one round trip: the session's leading
        ``system`` messages (with ``include_system``), then the newest messages whose token counts fit
        in what is left of ``max_tokens``. The window never opens on a ``tool`` message (it moves past
        them). A message without ``token_count`` counts one token per 4 bytes of its stored content
        (at least 1). At most 1,000 messages."""
        return self.sync.run(
            ops.get_context(
                self.ctx, session_id, max_tokens=max_tokens, owner=owner, include_system=include_system
            )
        )

    async def aget_context(
        self, session_id: str, *, max_tokens: int, owner: str | None = None, include_system: bool = True
    ) -> list[Message]:
        return await self.aio.run(
            ops.get_context(
                self.ctx, session_id, max_tokens=max_tokens, owner=owner, include_system=include_system
            )
        )

    def events_since(
        self, session_id: str, last_event_id: str, *, owner: str | None = None
    ) -> tuple[list[Event], bool]:
        """The session's changes after ``last_event_id`` (oldest first), and whether none were
        trimmed from its stream since (``EVENT_HISTORY`` keeps the newest). Raises ``SessionNotFound``."""
        return self.sync.run(ops.events_since(self.ctx, session_id, last_event_id, owner=owner))

    async def aevents_since(
        self, session_id: str, last_event_id: str, *, owner: str | None = None
    ) -> tuple[list[Event], bool]:
        return await self.aio.run(ops.events_since(self.ctx, session_id, last_event_id, owner=owner))

    def events_channel(self, session_id: str) -> str:
        """The pub/sub channel a session's changes are published on (sharded on a Redis Cluster)."""
        return self.keys.events(session_id)


__all__ = ["UNSET", "ConversationStore", "StoreConfig", "new_session_id"]

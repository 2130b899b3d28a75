"""``conversations_purge``: delete sessions by owner, by idle time, or all of them.

Sessions are found with ``SCAN`` over the meta hashes (not through the owner indexes, so a session
missing from its index is found too) and deleted one by one with ``ConversationStore.delete_session``:
the ``session_deleted`` signal fires and the owner index loses the entry in the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext_lazy as _

from conversations.exceptions import InvalidInput
from conversations.store import ConversationStore
from conversations.store.validation import owner_value

from .durations import format_duration
from .scanning import parse_int, redis_errors, scan_batches, server_time_ms, text


@dataclass(frozen=True)
class PurgeCriteria:
    """Exactly one of: an owner, an idle time in seconds, or everything."""

    owner: str | None = None
    idle_longer_than: int | None = None
    everything: bool = False

    def __post_init__(self) -> None:
        chosen = sum((self.owner is not None, self.idle_longer_than is not None, self.everything))
        if chosen != 1:
            raise InvalidInput(
                str(_("Choose exactly one of --owner, --idle-longer-than or --all.")), field="filter"
            )
        if self.owner is not None:
            owner_value(self.owner)

    def describe(self) -> str:
        if self.owner is not None:
            return str(_("owned by %(owner)r") % {"owner": self.owner})
        if self.idle_longer_than is not None:
            return str(_("idle longer than %(d)s") % {"d": format_duration(self.idle_longer_than)})
        return str(_("all sessions"))

    def matches(self, owner: str, idle_ms: int | None) -> bool:
        if self.owner is not None:
            return owner == self.owner
        if self.idle_longer_than is not None:
            return idle_ms is not None and idle_ms > self.idle_longer_than * 1000
        return True


@dataclass(frozen=True)
class MatchedSession:
    session_id: str
    owner: str
    messages: int
    idle_seconds: float | None


@dataclass
class PurgeResult:
    matched: int = 0  # sessions that met the criteria
    messages: int = 0  # messages in them
    deleted: int = 0  # deleted by this run
    gone: int = 0  # matched, but expired or deleted by someone else before this run's delete
    corrupt: int = 0  # session keys that could not be read (see conversations_report); left alone


def purge_sessions(
    store: ConversationStore,
    criteria: PurgeCriteria,
    *,
    dry_run: bool,
    on_match: Callable[[MatchedSession], Any] | None = None,
) -> PurgeResult:
    """Delete (or with ``dry_run`` only find) the sessions meeting ``criteria``."""
    client, keys = store.client, store.keys
    result = PurgeResult()
    with redis_errors():
        now_ms = server_time_ms(client)
        for batch in scan_batches(client, keys.meta_pattern()):
            session_ids: list[str] = []
            pipe = client.pipeline(transaction=False)
            for raw_key in batch:
                key = text(raw_key)
                session_id = keys.session_id_from_key(key)
                if session_id is None or key != keys.meta(session_id):
                    result.corrupt += 1
                    continue
                session_ids.append(session_id)
                pipe.hmget(key, "owner", "updated_at", "count")
                pipe.exists(key)
            replies = pipe.execute(raise_on_error=False) if session_ids else []
            for i, session_id in enumerate(session_ids):
                fields, exists = replies[2 * i], replies[2 * i + 1]
                if isinstance(fields, Exception) or fields[0] is None:
                    result.corrupt += int(exists == 1)  # a vanished session is not corrupt
                    continue
                owner = text(fields[0])
                updated_at = parse_int(fields[1])
                idle_ms = None if updated_at is None else now_ms - updated_at
                if not criteria.matches(owner, idle_ms):
                    continue
                result.matched += 1
                count = parse_int(fields[2]) or 0
                result.messages += count
                if on_match is not None:
                    on_match(
                        MatchedSession(session_id, owner, count, None if idle_ms is None else idle_ms / 1000)
                    )
                if dry_run:
                    continue
                # A session that met the criteria a few milliseconds ago is deleted even if a write
                # lands in between; the store's delete keeps the owner check, signal and index.
                if store.delete_session(session_id, owner=owner or None):
                    result.deleted += 1
                else:
                    result.gone += 1
    return result

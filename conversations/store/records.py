"""The values the store hands back: plain dataclasses with aware UTC datetimes.

They are immutable (frozen) except ``Message``: a read builds one per message, and a frozen dataclass
costs about twice as much to build (each field goes through ``object.__setattr__``), which showed as
~15% of reading the last 20 messages. Treat messages as values all the same; the store never shares
one instance between two calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def as_text(value: bytes | str | None) -> str:
    """A Redis reply as text (None as ""); undecodable bytes become U+FFFD rather than an error."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def from_millis(value: int | float | bytes | str) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


@dataclass(slots=True)
class Message:
    """One stored message. ``id`` is its position in the session, starting at 1."""

    id: int
    role: str
    content: str
    sources: list[dict[str, Any]]
    created_at: datetime

    @property
    def timestamp(self) -> int:
        """Seconds since the epoch, as the seed store's messages had it."""
        return int(self.created_at.timestamp())


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A session without its messages, as listings return it."""

    id: str
    owner: str | None
    title: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    message_count: int

    @property
    def session_id(self) -> str:
        """The seed store's name for ``id``."""
        return self.id


@dataclass(frozen=True, slots=True)
class Session(SessionSummary):
    """A session with its messages in order."""

    messages: list[Message] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of an owner's sessions, most recently active first. ``next_cursor`` is None on the last."""

    sessions: list[SessionSummary]
    next_cursor: str | None

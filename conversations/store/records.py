"""The values the store hands back: plain dataclasses with aware UTC datetimes.

They are immutable (frozen) except ``Message``: a read builds one per message, and a frozen dataclass
costs about twice as much to build (each field goes through ``object.__setattr__``), which showed as
~15% of reading the last 20 messages. Treat messages as values all the same; the store never shares
one instance between two calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Message:
    """One stored message. ``id`` orders the session's messages (1, 2, ...) and is never reused: after
    a removal the other messages keep theirs and the next append gets a higher one.

    ``status`` is ``"completed"``, ``"in_progress"`` (a reply still being written) or ``"incomplete"``
    (stopped early); ``data`` is the caller's own JSON object (tool calls, usage...), kept verbatim;
    ``token_count`` is what the caller counted (the store does not tokenize)."""

    id: int
    role: str
    content: str
    sources: list[dict[str, Any]]
    created_at: datetime
    status: str = "completed"
    data: dict[str, Any] = field(default_factory=dict)
    token_count: int | None = None

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

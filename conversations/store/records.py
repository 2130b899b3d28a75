"""The values the store hands back: plain dataclasses with aware UTC datetimes.

They are immutable (frozen) except ``Message``: a read builds one per message, and a frozen dataclass
costs about twice as much to build (each field goes through ``object.__setattr__``), which showed as
~15% of reading the last 20 messages. Treat messages as values all the same; the store never shares
one instance between two calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any


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


@dataclass(frozen=True)
class SessionSummary:
    """A session without its messages, as listings return it.

    A whole listing builds thousands at once, so it leaves their fields as Redis sent them until one
    is read: ``_pending`` is then the decoder of the batch the summary came in (a few hundred of them,
    sharing one reply), which fills every summary of the batch at once.
    """

    __slots__ = (
        "_pending",
        "created_at",
        "expires_at",
        "id",
        "message_count",
        "metadata",
        "owner",
        "title",
        "updated_at",
    )

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

    def __getstate__(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]

    def __setstate__(self, state: list[Any]) -> None:
        for f, value in zip(fields(self), state, strict=True):
            object.__setattr__(self, f.name, value)

    if not TYPE_CHECKING:  # to mypy, a class with __getattr__ has every attribute

        def __getattr__(self, name: str) -> Any:
            # Reached only when a slot is unset: a listed summary not decoded yet (or a real miss).
            try:
                decode = _PENDING.__get__(self)
            except AttributeError:
                raise AttributeError(
                    f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
                ) from None
            decode()
            return object.__getattribute__(self, name)


_PENDING = SessionSummary._pending  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Session(SessionSummary):
    """A session with its messages in order."""

    messages: list[Message] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of an owner's sessions, most recently active first. ``next_cursor`` is None on the last."""

    sessions: list[SessionSummary]
    next_cursor: str | None

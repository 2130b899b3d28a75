"""Domain errors of the conversation store. They know nothing of HTTP: the views translate them."""

from __future__ import annotations


class ConversationError(Exception):
    """Base class of every error raised by django-conversations."""


class SessionNotFound(ConversationError):
    """The session does not exist, has expired, or belongs to another owner (indistinguishable on purpose)."""


class InvalidInput(ConversationError, ValueError):
    """A value was refused before anything was written. ``field`` names the offending input when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class SessionFull(ConversationError):
    """The session already holds ``MAX_MESSAGES`` messages."""


class IdempotencyConflict(ConversationError):
    """An idempotency key was reused with a different request body."""


class StoreUnavailable(ConversationError):
    """Redis could not be reached or did not answer in time. The redis-py error is chained as __cause__."""


class StoreOutOfMemory(StoreUnavailable):
    """Redis refused a write because it reached ``maxmemory`` (policy ``noeviction``). Nothing was written."""


class MessageNotFound(ConversationError):
    """No message with that id in the session (never was, or removed). Another owner's session's
    messages are not found either: the session itself is ``SessionNotFound`` then."""


class MessageNotInProgress(ConversationError):
    """``extend_message`` on a message whose status is not ``in_progress``."""

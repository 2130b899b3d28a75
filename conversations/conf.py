"""Settings for django-conversations: one dict, ``settings.CONVERSATIONS``.

Every key has a default (``DEFAULTS``). Values are read from Django's settings each time they are
asked for, never cached at import, so ``override_settings`` and pytest-django's ``settings`` fixture
just work. Validation lives in ``conversations.checks`` and runs with Django's system checks.

    CONVERSATIONS = {
        "CACHE_ALIAS": "default",      # a django-redis cache in CACHES
        "KEY_PREFIX": "conversations", # every Redis key this app writes starts with it
        "SESSION_TTL": 1800,           # seconds; renewed on every write (sliding expiry)
        ...
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Which entry of CACHES holds the Redis connection (must be a django-redis cache).
    "CACHE_ALIAS": "default",
    # Dotted path to a callable ``(alias: str) -> redis client``; None uses django-redis's client.
    "CLIENT_FACTORY": None,
    # Dotted path to a callable ``(alias: str) -> redis.asyncio client``, called once per event loop;
    # None builds the async client from the same CACHES entry.
    "ASYNC_CLIENT_FACTORY": None,
    # Prefix of every key the store writes (no braces, no whitespace).
    "KEY_PREFIX": "conversations",
    # Sliding expiry of a whole session, in seconds.
    "SESSION_TTL": 1800,
    # Characters in one message's content.
    "MAX_MESSAGE_LENGTH": 32_000,
    # Messages in one session; the next append is refused (SessionFull / HTTP 409).
    "MAX_MESSAGES": 10_000,
    # Citations on one message.
    "MAX_SOURCES": 50,
    # Encoded size (UTF-8 JSON bytes) of all sources of one message together.
    "MAX_SOURCES_BYTES": 65_536,
    # Encoded size (UTF-8 JSON bytes) of one message's free-form ``data`` object.
    "MAX_MESSAGE_DATA_BYTES": 65_536,
    # Encoded size (UTF-8 JSON bytes) of a session's metadata object.
    "MAX_METADATA_BYTES": 16_384,
    # Nesting depth of JSON values in metadata and sources.
    "MAX_JSON_DEPTH": 16,
    # Characters in a session title.
    "MAX_TITLE_LENGTH": 200,
    # Accepted message roles.
    "ROLES": ("user", "assistant", "system", "tool"),
    # Whether anonymous visitors may hold sessions (tied to their Django session).
    "ALLOW_ANONYMOUS": False,
    # Dotted path to ``callable(request) -> str | None`` giving the owner of a request.
    "OWNER_RESOLVER": "conversations.owners.default_owner",
    # Replicas that must confirm a write (Redis WAIT) before the store reports it done; 0: don't wait.
    "REPLICA_ACKS": 0,
    # Seconds a write waits for those confirmations before it fails with StoreUnavailable.
    "REPLICA_ACK_TIMEOUT": 1.0,
    # Changes kept per session for live event streams to resume from (``Last-Event-ID``); every write
    # also publishes its change. 0 turns events off (no stream, no publish).
    "EVENT_HISTORY": 500,
}


class ConversationsSettings:
    """Typed, read-at-call-time view over ``settings.CONVERSATIONS``."""

    @property
    def user_settings(self) -> Mapping[str, Any]:
        value = getattr(settings, "CONVERSATIONS", {})
        return value if isinstance(value, Mapping) else {}

    def get(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown django-conversations setting: {name}")
        return self.user_settings.get(name, DEFAULTS[name])

    @property
    def CACHE_ALIAS(self) -> str:
        return str(self.get("CACHE_ALIAS"))

    @property
    def CLIENT_FACTORY(self) -> str | None:
        value = self.get("CLIENT_FACTORY")
        return None if value is None else str(value)

    @property
    def ASYNC_CLIENT_FACTORY(self) -> str | None:
        value = self.get("ASYNC_CLIENT_FACTORY")
        return None if value is None else str(value)

    @property
    def KEY_PREFIX(self) -> str:
        return str(self.get("KEY_PREFIX"))

    @property
    def SESSION_TTL(self) -> int:
        return int(self.get("SESSION_TTL"))

    @property
    def MAX_MESSAGE_LENGTH(self) -> int:
        return int(self.get("MAX_MESSAGE_LENGTH"))

    @property
    def MAX_MESSAGES(self) -> int:
        return int(self.get("MAX_MESSAGES"))

    @property
    def MAX_SOURCES(self) -> int:
        return int(self.get("MAX_SOURCES"))

    @property
    def MAX_SOURCES_BYTES(self) -> int:
        return int(self.get("MAX_SOURCES_BYTES"))

    @property
    def MAX_MESSAGE_DATA_BYTES(self) -> int:
        return int(self.get("MAX_MESSAGE_DATA_BYTES"))

    @property
    def EVENT_HISTORY(self) -> int:
        return int(self.get("EVENT_HISTORY"))

    @property
    def MAX_METADATA_BYTES(self) -> int:
        return int(self.get("MAX_METADATA_BYTES"))

    @property
    def MAX_JSON_DEPTH(self) -> int:
        return int(self.get("MAX_JSON_DEPTH"))

    @property
    def MAX_TITLE_LENGTH(self) -> int:
        return int(self.get("MAX_TITLE_LENGTH"))

    @property
    def ROLES(self) -> tuple[str, ...]:
        return tuple(self.get("ROLES"))

    @property
    def ALLOW_ANONYMOUS(self) -> bool:
        return bool(self.get("ALLOW_ANONYMOUS"))

    @property
    def OWNER_RESOLVER(self) -> str:
        return str(self.get("OWNER_RESOLVER"))

    @property
    def REPLICA_ACKS(self) -> int:
        return int(self.get("REPLICA_ACKS"))

    @property
    def REPLICA_ACK_TIMEOUT(self) -> float:
        return float(self.get("REPLICA_ACK_TIMEOUT"))


conf = ConversationsSettings()

"""The one translation of redis-py's failures into the store's errors (sync, async and operator tools)."""

from __future__ import annotations

import redis

from conversations.exceptions import StoreOutOfMemory, StoreUnavailable

# redis.asyncio raises the same exception classes as redis-py's sync client.
UNAVAILABLE_ERRORS: tuple[type[redis.RedisError], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,
)

_UNAVAILABLE_REPLIES = ("READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS")


def store_error(exc: BaseException) -> StoreUnavailable | None:
    """The store's error for a redis-py failure, or None to let it through unchanged."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return StoreUnavailable(f"Cannot reach Redis: {exc}")
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM" in text.split(" ", 2)[:2]:
            return StoreOutOfMemory(f"Redis is out of memory: {text}")
        if isinstance(exc, redis.exceptions.ReadOnlyError) or text.startswith(_UNAVAILABLE_REPLIES):
            return StoreUnavailable(f"Redis cannot serve this now: {text}")
    return None


def translated(exc: redis.RedisError) -> BaseException:
    """``store_error(exc)`` with the cause chained, or ``exc`` itself when it has no translation."""
    error = store_error(exc)
    if error is None:
        return exc
    error.__cause__ = exc
    return error

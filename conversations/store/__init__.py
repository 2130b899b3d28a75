"""The conversation store: ``get_store()`` gives the one configured by ``settings.CONVERSATIONS``.

Public: ``get_store``, ``ConversationStore`` (its methods and their ``a…`` twins), ``StoreConfig``, the
records (``Session``, ``SessionSummary``, ``SessionPage``, ``Message``, ``Event``), ``UNSET``,
``new_session_id``, ``get_redis_client`` and ``store_config``. The submodules (``keys``, ``scripts``,
``codec``, ``operations``, ``transport_*``, ``topology``, ``validation``, ``errors``) are internals:
they may change between releases.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from conversations.conf import conf

from .codec import Event
from .records import Message, Session, SessionPage, SessionSummary
from .service import UNSET, ConversationStore, StoreConfig, new_session_id

__all__ = [
    "UNSET",
    "ConversationStore",
    "Event",
    "Message",
    "Session",
    "SessionPage",
    "SessionSummary",
    "StoreConfig",
    "get_redis_client",
    "get_store",
    "new_session_id",
    "store_config",
]

# One store per (client, config): building one costs more than a request's work, so reuse it.
_stores: dict[tuple[int, StoreConfig], ConversationStore] = {}


def get_redis_client(alias: str | None = None) -> Any:
    """The raw redis-py client the store uses: ``CLIENT_FACTORY(alias)`` if set, else the cache's
    (django-redis, ``conversations.clients.ClusterClient`` or Django's RedisCache; see ``clients``)."""
    alias = alias or conf.CACHE_ALIAS
    factory_path = conf.CLIENT_FACTORY
    if factory_path:
        return import_string(factory_path)(alias)
    from conversations.clients import cache_client

    return cache_client(alias)


# The settings.CONVERSATIONS object last read, a copy of its contents then, and the config built from it.
_config_cache: tuple[Any, Any, StoreConfig] | None = None


def store_config() -> StoreConfig:
    """``StoreConfig.from_settings()``, built again only when ``settings.CONVERSATIONS`` changes: every
    request asks for it, and building it (a dozen settings reads) cost about as much as a Redis round
    trip. A replaced dict (``override_settings``) or one edited in place both count as a change."""
    global _config_cache
    raw = getattr(settings, "CONVERSATIONS", None)
    cached = _config_cache
    if cached is not None and cached[0] is raw and cached[1] == raw:
        return cached[2]
    config = StoreConfig.from_settings()
    _config_cache = (raw, copy.deepcopy(raw), config)
    return config


def get_store() -> ConversationStore:
    """The store configured by settings, on the Redis client of ``CONVERSATIONS["CACHE_ALIAS"]``.

    No I/O: callable from sync and async code alike. Its ``a…`` methods use the running event loop's
    ``redis.asyncio`` client for the same cache (``conversations.clients.get_async_redis_client``).
    """
    client = get_redis_client()
    config = store_config()
    alias = conf.CACHE_ALIAS
    key = (id(client), config)
    store = _stores.get(key)
    if store is None or store.client is not client:
        if len(_stores) > 64:
            _stores.clear()
        store = _stores[key] = ConversationStore(
            client, config, async_client_factory=functools.partial(_async_client, alias)
        )
    return store


def _async_client(alias: str) -> Any:
    from conversations.clients import get_async_redis_client

    return get_async_redis_client(alias)

"""The conversation store: ``get_store()`` gives the one configured by ``settings.CONVERSATIONS``."""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from conversations.conf import conf

from .keys import KeyLayout
from .records import Message, Session, SessionPage, SessionSummary
from .service import UNSET, ConversationStore, StoreConfig, new_session_id

__all__ = [
    "UNSET",
    "ConversationStore",
    "KeyLayout",
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

# One store per (client, config): building one registers its scripts, so reuse it across requests.
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
    """The store configured by settings, on the Redis client of ``CONVERSATIONS["CACHE_ALIAS"]``."""
    client = get_redis_client()
    config = store_config()
    key = (id(client), config)
    store = _stores.get(key)
    if store is None or store.client is not client:
        if len(_stores) > 64:
            _stores.clear()
        store = _stores[key] = ConversationStore(client, config)
    return store

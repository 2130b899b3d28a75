"""The conversation store: ``get_store()`` gives the one configured by ``settings.CONVERSATIONS``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
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
]

# One store per (client, config): building one registers its scripts, so reuse it across requests.
_stores: dict[tuple[int, StoreConfig], ConversationStore] = {}


def get_redis_client(alias: str | None = None) -> Any:
    """The raw redis-py client the store uses: ``CLIENT_FACTORY(alias)`` if set, else django-redis's."""
    alias = alias or conf.CACHE_ALIAS
    factory_path = conf.CLIENT_FACTORY
    if factory_path:
        return import_string(factory_path)(alias)
    from django_redis import get_redis_connection

    try:
        return get_redis_connection(alias)
    except NotImplementedError as exc:
        raise ImproperlyConfigured(
            f"The cache {alias!r} is not a django-redis cache; set CONVERSATIONS['CACHE_ALIAS'] to one."
        ) from exc


def get_store() -> ConversationStore:
    """The store configured by settings, on the Redis client of ``CONVERSATIONS["CACHE_ALIAS"]``."""
    client = get_redis_client()
    config = StoreConfig.from_settings()
    key = (id(client), config)
    store = _stores.get(key)
    if store is None or store.client is not client:
        if len(_stores) > 64:
            _stores.clear()
        store = _stores[key] = ConversationStore(client, config)
    return store

"""Settings are read at call time, and get_store() follows them."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from conversations.conf import DEFAULTS, conf
from conversations.store import ConversationStore, get_redis_client, get_store


def test_defaults_apply_when_unset(settings: Any) -> None:
    settings.CONVERSATIONS = {}
    assert conf.SESSION_TTL == 1800
    assert conf.KEY_PREFIX == "conversations"
    assert conf.ROLES == ("user", "assistant", "system", "tool")
    assert conf.ALLOW_ANONYMOUS is False
    assert set(DEFAULTS) >= {
        "CACHE_ALIAS",
        "KEY_PREFIX",
        "SESSION_TTL",
        "MAX_MESSAGE_LENGTH",
        "MAX_MESSAGES",
        "MAX_SOURCES",
        "MAX_METADATA_BYTES",
        "ROLES",
        "ALLOW_ANONYMOUS",
        "OWNER_RESOLVER",
    }


def test_settings_are_read_at_call_time(settings: Any) -> None:
    settings.CONVERSATIONS = {"SESSION_TTL": 60, "MAX_MESSAGES": 3}
    assert conf.SESSION_TTL == 60
    store = get_store()
    assert store.config.session_ttl == 60
    assert store.config.max_messages == 3
    settings.CONVERSATIONS = {"SESSION_TTL": 90}
    assert get_store().config.session_ttl == 90


def test_unknown_setting_name_is_an_error() -> None:
    with pytest.raises(AttributeError):
        conf.get("NOPE")


def test_get_store_is_reused_for_the_same_client_and_config() -> None:
    assert get_store() is get_store()


def test_get_store_rejects_a_non_django_redis_alias(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    settings.CONVERSATIONS = {"CACHE_ALIAS": "locmem"}
    with pytest.raises(ImproperlyConfigured, match="locmem"):
        get_store()


_factory_calls: list[str] = []


def fake_factory(alias: str) -> Any:
    import fakeredis

    _factory_calls.append(alias)
    return fakeredis.FakeRedis(server=_SERVER)


_SERVER: Any = None


def test_client_factory_supplies_the_client(settings: Any) -> None:
    import fakeredis

    global _SERVER
    _SERVER = fakeredis.FakeServer()
    settings.CONVERSATIONS = {"CLIENT_FACTORY": "tests.test_conf.fake_factory", "KEY_PREFIX": "factory"}
    client = get_redis_client()
    assert _factory_calls[-1] == "default"
    store = ConversationStore(client)
    session = store.create_session()
    assert store.get_session(session.id) is not None

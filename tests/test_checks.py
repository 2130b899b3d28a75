"""One test per system check id (conversations/checks.py), plus the clean configuration."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import Error, Warning

from conversations.checks import check_settings


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def test_test_settings_are_clean() -> None:
    assert check_settings() == []


def test_e001_not_a_dict(settings: Any) -> None:
    settings.CONVERSATIONS = ["KEY_PREFIX", "x"]
    assert ids(check_settings()) == ["conversations.E001"]


def test_e002_unknown_cache_alias(settings: Any) -> None:
    settings.CONVERSATIONS = {"CACHE_ALIAS": "nope"}
    messages = check_settings()
    assert ids(messages) == ["conversations.E002"]
    assert "'nope'" in messages[0].msg


def test_e003_not_django_redis(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    settings.CONVERSATIONS = {"CACHE_ALIAS": "locmem"}
    messages = check_settings()
    assert ids(messages) == ["conversations.E003"]
    assert isinstance(messages[0], Error)


def test_e003_is_lifted_by_a_client_factory(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    settings.CONVERSATIONS = {"CACHE_ALIAS": "locmem", "CLIENT_FACTORY": "tests.test_checks.ids"}
    assert check_settings() == []


@pytest.mark.parametrize("prefix", ["", "with{brace}", "has space", 42, "tab\there"])
def test_e004_bad_key_prefix(settings: Any, prefix: Any) -> None:
    settings.CONVERSATIONS = {"KEY_PREFIX": prefix}
    assert ids(check_settings()) == ["conversations.E004"]


@pytest.mark.parametrize("ttl", [0, -5, "1800", 1.5, True])
def test_e005_bad_ttl(settings: Any, ttl: Any) -> None:
    settings.CONVERSATIONS = {"SESSION_TTL": ttl}
    assert ids(check_settings()) == ["conversations.E005"]


@pytest.mark.parametrize(
    "name",
    [
        "MAX_MESSAGE_LENGTH",
        "MAX_MESSAGES",
        "MAX_SOURCES",
        "MAX_SOURCES_BYTES",
        "MAX_MESSAGE_DATA_BYTES",
        "MAX_METADATA_BYTES",
        "MAX_JSON_DEPTH",
        "MAX_TITLE_LENGTH",
    ],
)
def test_e006_bad_size_limit(settings: Any, name: str) -> None:
    settings.CONVERSATIONS = {name: 0}
    messages = check_settings()
    assert ids(messages) == ["conversations.E006"]
    assert name in messages[0].msg


@pytest.mark.parametrize("value", [0, -1, "65536", 1.5, True, None])
def test_e006_bad_message_data_limit(settings: Any, value: Any) -> None:
    settings.CONVERSATIONS = {"MAX_MESSAGE_DATA_BYTES": value}
    messages = check_settings()
    assert ids(messages) == ["conversations.E006"]
    assert "MAX_MESSAGE_DATA_BYTES" in messages[0].msg


def test_e006_accepts_a_positive_message_data_limit(settings: Any) -> None:
    settings.CONVERSATIONS = {"MAX_MESSAGE_DATA_BYTES": 1024}
    assert check_settings() == []


@pytest.mark.parametrize("history", [-1, "500", 2.5, True])
def test_e016_bad_event_history(settings: Any, history: Any) -> None:
    settings.CONVERSATIONS = {"EVENT_HISTORY": history}
    assert ids(check_settings()) == ["conversations.E016"]


@pytest.mark.parametrize("roles", [[], "user", ["user", "user"], ["user", ""], [1]])
def test_e007_bad_roles(settings: Any, roles: Any) -> None:
    settings.CONVERSATIONS = {"ROLES": roles}
    assert ids(check_settings()) == ["conversations.E007"]


def test_e008_allow_anonymous_not_bool(settings: Any) -> None:
    settings.CONVERSATIONS = {"ALLOW_ANONYMOUS": "yes"}
    assert ids(check_settings()) == ["conversations.E008"]


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("OWNER_RESOLVER", "no.such.module"),
        ("OWNER_RESOLVER", "conversations.conf.DEFAULTS"),
        ("CLIENT_FACTORY", "conversations.nothing_here"),
    ],
)
def test_e009_resolver_or_factory_not_callable(settings: Any, name: str, path: str) -> None:
    settings.CONVERSATIONS = {name: path}
    messages = check_settings()
    assert ids(messages) == ["conversations.E009"]
    assert name in messages[0].msg


@pytest.mark.parametrize("path", ["no.such.module", "conversations.conf.DEFAULTS", 42])
def test_e015_async_client_factory_not_callable(settings: Any, path: Any) -> None:
    settings.CONVERSATIONS = {"ASYNC_CLIENT_FACTORY": path}
    messages = check_settings()
    assert ids(messages) == ["conversations.E015"]
    assert "ASYNC_CLIENT_FACTORY" in messages[0].msg


def test_w001_unknown_key(settings: Any) -> None:
    settings.CONVERSATIONS = {"SESION_TTL": 60}
    messages = check_settings()
    assert ids(messages) == ["conversations.W001"]
    assert isinstance(messages[0], Warning)
    assert "SESSION_TTL" in (messages[0].hint or "")


def test_w002_no_socket_timeout(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "slow": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:6379/0"},
    }
    settings.CONVERSATIONS = {"CACHE_ALIAS": "slow"}
    assert ids(check_settings()) == ["conversations.W002"]


def test_checks_run_through_manage_py_check(settings: Any) -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.CONVERSATIONS = {"SESSION_TTL": -1}
    with pytest.raises(SystemCheckError, match=r"conversations\.E005"):
        call_command("check", stdout=StringIO(), stderr=StringIO())

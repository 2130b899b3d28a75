"""Deployment checks (E010-E014, W003; W002 for Django's RedisCache) and the cache backends they judge:
Django's built-in RedisCache is supported, django-redis's ShardClient is refused."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from conversations.checks import check_settings
from conversations.exceptions import StoreUnavailable
from conversations.store import get_redis_client, get_store


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def use_cache(settings: Any, config: dict[str, Any], **conversations: Any) -> None:
    settings.CACHES = {**settings.CACHES, "deploy": config}
    settings.CONVERSATIONS = {"CACHE_ALIAS": "deploy", **conversations}


def django_redis(location: Any = "redis://127.0.0.1:6379/0", **options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": location,
        "OPTIONS": {"SOCKET_TIMEOUT": 2, **options},
    }


SENTINEL_OPTIONS = {
    "CLIENT_CLASS": "django_redis.client.SentinelClient",
    "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
    "SENTINELS": [("127.0.0.1", 26379)],
}
CLUSTER = "conversations.clients.ClusterClient"


# ---------------------------------------------------------------- Django's built-in RedisCache


def test_djangos_redis_cache_is_accepted(settings: Any) -> None:
    use_cache(
        settings,
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "OPTIONS": {"socket_timeout": 2},
        },
    )
    assert check_settings() == []


def test_w002_djangos_redis_cache_without_a_socket_timeout(settings: Any) -> None:
    # Django passes OPTIONS to redis-py unchanged: django-redis's upper-case name means nothing there.
    use_cache(
        settings,
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "OPTIONS": {"SOCKET_TIMEOUT": 2},
        },
    )
    messages = check_settings()
    assert ids(messages) == ["conversations.W002"]
    assert "socket_timeout" in messages[0].msg


@pytest.mark.redis
def test_the_store_runs_on_djangos_redis_cache(settings: Any, key_prefix: str, redis_url: str) -> None:
    use_cache(
        settings,
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        },
        KEY_PREFIX=key_prefix,
    )
    store = get_store()
    session = store.create_session(owner="alice", title="built-in")
    store.append_message(session.id, role="user", content="hello", owner="alice")
    assert [s.id for s in store.list_sessions(owner="alice")] == [session.id]
    assert store.count_messages(session.id, owner="alice") == 1
    # One client for the whole process, whichever thread asks (Django's cache objects are per thread).
    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(get_redis_client()))
    thread.start()
    thread.join()
    assert other == [store.client]
    assert isinstance(store.client, redis.Redis)


# ---------------------------------------------------------------- E010 ShardClient


def test_e010_shard_client_is_refused(settings: Any) -> None:
    use_cache(
        settings,
        django_redis(
            ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0"],
            CLIENT_CLASS="django_redis.client.ShardClient",
        ),
    )
    messages = check_settings()
    assert ids(messages) == ["conversations.E010"]
    assert CLUSTER in messages[0].hint


def test_a_shard_client_store_fails_with_a_message_naming_the_check(settings: Any) -> None:
    use_cache(settings, django_redis(CLIENT_CLASS="django_redis.client.ShardClient"))
    with pytest.raises(ImproperlyConfigured, match=r"ShardClient.*conversations\.E010"):
        get_store()


# ---------------------------------------------------------------- E011 Sentinel


def test_sentinel_settings_as_documented_are_clean(settings: Any) -> None:
    use_cache(settings, django_redis("redis://mymaster/0", **SENTINEL_OPTIONS))
    assert check_settings() == []


def test_sentinel_factory_may_come_from_the_global_setting(settings: Any) -> None:
    options = {k: v for k, v in SENTINEL_OPTIONS.items() if k != "CONNECTION_FACTORY"}
    settings.DJANGO_REDIS_CONNECTION_FACTORY = "django_redis.pool.SentinelConnectionFactory"
    use_cache(settings, django_redis("redis://mymaster/0", **options))
    assert check_settings() == []


@pytest.mark.parametrize("missing", ["CONNECTION_FACTORY", "SENTINELS"])
def test_e011_sentinel_client_without_sentinel_connections(settings: Any, missing: str) -> None:
    options = {k: v for k, v in SENTINEL_OPTIONS.items() if k != missing}
    use_cache(settings, django_redis("redis://mymaster/0", **options))
    messages = check_settings()
    assert ids(messages) == ["conversations.E011"]
    assert "SentinelConnectionFactory" in messages[0].hint


# ---------------------------------------------------------------- E012 cluster LOCATION


@pytest.mark.parametrize(
    "location",
    [
        ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"],
        "redis://10.0.0.1:7000,redis://10.0.0.2:7000",
        "rediss://user:secret@cluster.example.com:6380/0",
    ],
)
def test_cluster_locations_that_work(settings: Any, location: Any) -> None:
    use_cache(settings, django_redis(location, CLIENT_CLASS=CLUSTER))
    assert check_settings() == []


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("", "at least one node"),
        ("http://10.0.0.1:7000", "not a redis://"),
        ("redis://10.0.0.1:7000/3", "only database 0"),
        ("redis://10.0.0.1:notaport", "invalid port"),
        (["redis://10.0.0.1:7000", "rediss://10.0.0.2:7000"], "mixes"),
    ],
)
def test_e012_cluster_location_that_cannot_work(settings: Any, location: Any, says: str) -> None:
    use_cache(settings, django_redis(location, CLIENT_CLASS=CLUSTER))
    messages = check_settings()
    assert ids(messages) == ["conversations.E012"]
    assert says in messages[0].msg


# ---------------------------------------------------------------- E013/E014/W003 replica acknowledgements


@pytest.mark.parametrize(
    "conversations",
    [
        {"REPLICA_ACKS": -1},
        {"REPLICA_ACKS": "1"},
        {"REPLICA_ACKS": True},
        {"REPLICA_ACKS": 1.0},
        {"REPLICA_ACK_TIMEOUT": 0},
        {"REPLICA_ACK_TIMEOUT": "1"},
        {"REPLICA_ACK_TIMEOUT": None},
    ],
)
def test_e013_bad_replica_ack_settings(settings: Any, conversations: dict[str, Any]) -> None:
    use_cache(settings, django_redis(), **conversations)
    assert ids(check_settings()) == ["conversations.E013"]


def test_replica_acks_on_one_redis_are_clean(settings: Any) -> None:
    use_cache(settings, django_redis(), REPLICA_ACKS=2, REPLICA_ACK_TIMEOUT=0.5)
    assert check_settings() == []


def test_e014_replica_acks_on_a_cluster(settings: Any) -> None:
    use_cache(settings, django_redis("redis://10.0.0.1:7000", CLIENT_CLASS=CLUSTER), REPLICA_ACKS=1)
    assert ids(check_settings()) == ["conversations.E014"]


def test_w003_ack_timeout_not_shorter_than_the_socket_timeout(settings: Any) -> None:
    use_cache(settings, django_redis(), REPLICA_ACKS=1, REPLICA_ACK_TIMEOUT=2)
    messages = check_settings()
    assert ids(messages) == ["conversations.W003"]


@pytest.mark.redis
def test_replica_acks_without_replicas_fail_clearly_and_promptly(settings: Any, private_cache: Any) -> None:
    # A private Redis with no replica: nothing can confirm, so every write says so within the timeout.
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "REPLICA_ACKS": 1, "REPLICA_ACK_TIMEOUT": 0.1}
    store = get_store()
    with pytest.raises(StoreUnavailable, match="0 of 1 replicas confirmed"):
        store.create_session(owner="alice")

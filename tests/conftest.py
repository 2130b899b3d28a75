"""Fixtures only. ``store`` runs on the real Redis; ``fake_store`` on an in-process fakeredis.

Real-Redis fixtures skip when Redis does not answer, except under ``CI=true``, where they fail.
Every test gets its own key prefix and deletes its keys afterwards (SCAN, never FLUSHALL).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

from conversations.store import ConversationStore, StoreConfig, get_store

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    batch: list[Any] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"The real Redis at {REDIS_URL} does not answer: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: real-Redis tests never skip)", pytrace=False)
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture
def key_prefix(settings: Any, redis_url: str) -> Iterator[str]:
    """A fresh KEY_PREFIX in settings for this test; its keys are deleted afterwards."""
    prefix = f"ct-{uuid.uuid4().hex[:12]}"
    settings.CONVERSATIONS = {**getattr(settings, "CONVERSATIONS", {}), "KEY_PREFIX": prefix}
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    delete_prefix(client, prefix)
    client.close()


@pytest.fixture
def store(key_prefix: str) -> ConversationStore:
    """The store from ``get_store()``: settings, django-redis, the real Redis."""
    return get_store()


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def fake_store(fake_redis: fakeredis.FakeRedis) -> ConversationStore:
    return ConversationStore(fake_redis, StoreConfig(key_prefix="fake"))


@pytest.fixture
def private_redis() -> Iterator[Any]:
    """A redis-server of this test's own on a free port (see tests/redis_server.py), stopped afterwards.

    For tests that kill, pause, starve or reconfigure Redis: never done to the shared server.
    """
    from tests.redis_server import REDIS_SERVER, PrivateRedis

    if not os.path.exists(REDIS_SERVER):
        message = f"{REDIS_SERVER} is not installed"
        if IN_CI:
            pytest.fail(message + " (CI=true: real-Redis tests never skip)", pytrace=False)
        pytest.skip(message)
    server = PrivateRedis()
    server.start()
    yield server
    server.close()


@pytest.fixture
def private_cache(settings: Any, private_redis: Any) -> Iterator[Any]:
    """Point the app (``get_store()`` and the HTTP API) at ``private_redis`` through a fresh django-redis
    alias with 0.5 s socket timeouts; returns the server. The alias's pool is closed afterwards."""
    from django_redis.pool import ConnectionFactory

    name = f"pv-{uuid.uuid4().hex[:10]}"
    # A unique URL gives a fresh connection pool (django-redis caches pools per URL, process-wide).
    url = f"{private_redis.url}?client_name={name}"
    settings.CACHES = {
        **settings.CACHES,
        name: {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    settings.CONVERSATIONS = {
        **getattr(settings, "CONVERSATIONS", {}),
        "CACHE_ALIAS": name,
        "KEY_PREFIX": name,
    }
    yield private_redis
    pool = ConnectionFactory._pools.pop(url, None)
    if pool is not None:
        pool.disconnect()

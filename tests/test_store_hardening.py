"""The store-side findings of the hardening round, against real Redis servers.

* read scripts carry ``#!lua flags=no-writes``: a ``CLIENT PAUSE WRITE`` (what failover tooling does)
  holds writes, never reads;
* a create's idempotency record lives exactly as long as its session (renewed by every write,
  deleted with it), on a single Redis and on a Redis Cluster;
* ``expires_at`` is the absolute expiry the last write set: the same between two reads.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from conversations.exceptions import StoreUnavailable
from conversations.store import ConversationStore, get_store
from tests.redis_server import PrivateRedis
from tests.redis_servers import LocalCluster, local_cluster  # noqa: F401  (the ``cluster`` fixture)


def test_reads_are_served_while_writes_are_paused(private_cache: PrivateRedis) -> None:
    store = get_store()
    session = store.create_session(owner="user:1", title="kept readable")
    store.append_message(session.id, role="user", content="hello", owner="user:1")
    # Every read once, so its script is in Redis's cache (SCRIPT LOAD itself waits during a pause).
    store.get_session(session.id, owner="user:1")
    store.get_messages(session.id, owner="user:1", last=5)
    store.get_context(session.id, owner="user:1", max_tokens=100)
    store.list_sessions(owner="user:1")
    with private_cache.admin() as admin:
        admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    try:
        started = time.monotonic()
        fetched = store.get_session(session.id, owner="user:1")
        assert fetched is not None
        assert [m.content for m in fetched.messages] == ["hello"]
        assert [m.content for m in store.get_messages(session.id, owner="user:1", last=5)] == ["hello"]
        assert store.get_session_summary(session.id, owner="user:1").title == "kept readable"
        assert store.count_messages(session.id, owner="user:1") == 1
        assert [m.content for m in store.get_context(session.id, owner="user:1", max_tokens=100)] == ["hello"]
        assert [s.id for s in store.list_sessions(owner="user:1")] == [session.id]
        assert time.monotonic() - started < 0.5  # answered, not held until the pause ends
        with pytest.raises(StoreUnavailable):  # a write waits for the pause: it times out
            store.append_message(session.id, role="user", content="held", owner="user:1")
    finally:
        with private_cache.admin() as admin:
            admin.execute_command("CLIENT", "UNPAUSE")


def _keyed_create_outlives_one_ttl(store: ConversationStore, ttl_s: float) -> None:
    first = store.create_session({"n": 1}, owner="user:1", title="t", idempotency_key="create-1")
    # Keep the session alive past its first TTL with writes, then retry the create.
    deadline = time.monotonic() + ttl_s * 2.5
    while time.monotonic() < deadline:
        store.append_message(first.id, role="user", content="still here", owner="user:1")
        time.sleep(ttl_s / 3)
    retried = store.create_session({"n": 1}, owner="user:1", title="t", idempotency_key="create-1")
    assert retried.id == first.id, "a retried create made a second session while the first lives"
    assert [s.id for s in store.list_sessions(owner="user:1")] == [first.id]
    # Deleted with its session: the key may now create a new one.
    assert store.delete_session(first.id, owner="user:1")
    again = store.create_session({"n": 1}, owner="user:1", title="t", idempotency_key="create-1")
    assert again.id != first.id
    assert store.get_session(again.id, owner="user:1") is not None


def test_a_create_key_lives_as_long_as_its_session(settings: Any, store: ConversationStore) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "SESSION_TTL": 1}
    _keyed_create_outlives_one_ttl(get_store(), 1)


def test_a_create_key_lives_as_long_as_its_session_on_a_cluster(settings: Any, cluster: LocalCluster) -> None:
    alias = f"cl-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {**settings.CACHES, alias: cluster.cache_config()}
    settings.CONVERSATIONS = {"CACHE_ALIAS": alias, "KEY_PREFIX": alias, "SESSION_TTL": 1}
    store = get_store()
    assert store.is_cluster
    _keyed_create_outlives_one_ttl(store, 1)


def test_expires_at_is_the_same_between_two_reads(store: ConversationStore) -> None:
    session = store.create_session(owner="user:1")
    store.append_message(session.id, role="user", content="x", owner="user:1")
    first = store.get_session_summary(session.id, owner="user:1")
    time.sleep(0.05)
    second = store.get_session_summary(session.id, owner="user:1")
    assert first.expires_at == second.expires_at
    # Exactly one TTL after the last write, on Redis's clock.
    assert first.expires_at is not None
    assert (first.expires_at - first.updated_at).total_seconds() == store.config.session_ttl
    listed = store.list_sessions(owner="user:1")[0]
    assert listed.expires_at == first.expires_at

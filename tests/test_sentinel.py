"""Sentinel: the store on django-redis's SentinelClient, through a real ``SENTINEL FAILOVER``.

A local primary, replica and sentinel (tests/redis_servers.py) stand in for production. The store runs
with ``REPLICA_ACKS = 1``: a write counts as done only once the replica has confirmed it (Redis WAIT), so
an acknowledged append survives the promotion of that replica.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conversations.checks import check_settings
from conversations.exceptions import StoreUnavailable
from conversations.store import ConversationStore, Message, get_store
from tests.redis_servers import (
    LocalSentinel,
    local_sentinel,  # noqa: F401  (the module-scoped ``topology`` fixture)
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

OWNER = "user:sentinel"


@pytest.fixture
def sentinel_store(settings: Any, topology: LocalSentinel) -> Iterator[ConversationStore]:
    """``get_store()`` on a cache configured the way the README's Deployment section says."""
    from django_redis.pool import ConnectionFactory

    alias = f"sentinel-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {**settings.CACHES, alias: topology.cache_config()}
    settings.CONVERSATIONS = {
        "CACHE_ALIAS": alias,
        "KEY_PREFIX": f"ct-{uuid.uuid4().hex[:8]}",
        "REPLICA_ACKS": 1,
        "REPLICA_ACK_TIMEOUT": 0.5,
    }
    assert check_settings() == []
    yield get_store()
    for url in [u for u in ConnectionFactory._pools if topology.service in u]:
        ConnectionFactory._pools.pop(url).disconnect()


def _append_until_acknowledged(
    store: ConversationStore, session_id: str, content: str, deadline: float
) -> tuple[Message, int]:
    """Append with one idempotency key, retrying through the failover; returns (message, failures)."""
    failures = 0
    while True:
        try:
            return (
                store.append_message(
                    session_id, role="user", content=content, owner=OWNER, idempotency_key=content
                ),
                failures,
            )
        except StoreUnavailable:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _role(port: int) -> str:
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True) as client:
        return str(client.info("replication")["role"])


def test_an_unconfirmed_write_fails_and_its_retry_does_not_append_twice(
    sentinel_store: ConversationStore, topology: LocalSentinel
) -> None:
    primary_port = topology.primary_port()
    replica = topology.replica if primary_port == topology.primary.port else topology.primary
    session = sentinel_store.create_session(owner=OWNER)
    replica.stop_signal()  # the replica stops confirming; the primary still takes writes
    try:
        with pytest.raises(StoreUnavailable, match="confirmed"):
            sentinel_store.append_message(
                session.id, role="user", content="hello", owner=OWNER, idempotency_key="hello"
            )
    finally:
        replica.continue_signal()
    # The retry (same idempotency key) finds the first attempt's append and waits for the replica.
    retried, _ = _append_until_acknowledged(sentinel_store, session.id, "hello", time.monotonic() + 20)
    assert retried.id == 1
    assert [m.content for m in sentinel_store.get_messages(session.id, owner=OWNER)] == ["hello"]


def test_acknowledged_appends_survive_a_failover_and_continue_on_the_new_primary(
    sentinel_store: ConversationStore, topology: LocalSentinel
) -> None:
    old_primary = topology.primary_port()
    session = sentinel_store.create_session(owner=OWNER, title="failover")
    acknowledged: list[tuple[Message, float]] = []
    failures: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + 60

    def writer(number: int) -> None:
        try:
            i = 0
            while not stop.is_set():
                message, failed = _append_until_acknowledged(
                    sentinel_store, session.id, f"w{number}:{i}", deadline
                )
                with lock:
                    acknowledged.append((message, time.monotonic()))
                    failures.append(failed)
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(acknowledged) >= 30, timeout=30, what="appends before the failover")
        new_primary = topology.failover()
        # Sentinel turns the old primary into a replica of the new one; from then on every write
        # necessarily lands on the new primary.
        wait_until(lambda: _role(old_primary) == "slave", timeout=30, what="the old primary's demotion")
        demoted_at = time.monotonic()
        wait_until(
            lambda: sum(1 for _, at in acknowledged if at > demoted_at) >= 30,
            timeout=30,
            what="appends on the new primary",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert new_primary != old_primary
    assert _role(new_primary) == "master"

    # Everything acknowledged is there, once, at the id it was acknowledged with; nothing else is.
    transcript = sentinel_store.get_messages(session.id, owner=OWNER, limit=len(acknowledged) + 50)
    assert [m.id for m in transcript] == list(range(1, len(acknowledged) + 1))
    by_id = {m.id: m.content for m in transcript}
    for message, _ in acknowledged:
        assert by_id[message.id] == message.content, f"acknowledged message {message.id} was lost"
    assert sorted(by_id.values()) == sorted(m.content for m, _ in acknowledged)
    # Read the new primary directly, not through the sentinel: that is where the transcript lives.
    with redis.Redis(host="127.0.0.1", port=new_primary, socket_timeout=5) as direct:
        assert direct.zcard(sentinel_store.keys.messages(session.id)) == len(acknowledged)


# ---------------------------------------------------------------- the async twins, through Sentinel


def test_the_async_twins_create_append_read_list_and_delete_through_sentinel(
    sentinel_store: ConversationStore, topology: LocalSentinel
) -> None:
    """On the primary Sentinel names, each write confirmed by the replica (``REPLICA_ACKS = 1``: the
    script and its WAIT in one async pipeline)."""
    import asyncio

    from conversations.clients import get_async_redis_client

    store = sentinel_store

    async def main() -> tuple[str, list[str]]:
        client = get_async_redis_client()
        primary_port = (await client.connection_pool.get_master_address())[1]
        session = await store.acreate_session(owner=OWNER, title="via sentinel")
        await asyncio.gather(
            *(
                store.aappend_message(session.id, role="user", content=f"m{i}", owner=OWNER)
                for i in range(150)
            )
        )
        streaming = await store.aappend_message(
            session.id, role="assistant", content="", status="in_progress", owner=OWNER
        )
        await store.aextend_message(session.id, streaming.id, "done", owner=OWNER)
        read = await store.aget_session(session.id, owner=OWNER)
        assert read is not None
        assert read.message_count == 151
        assert read.messages[-1].content == "done"
        assert [s.id for s in await store.alist_sessions(owner=OWNER)] == [session.id]
        # Confirmed by the replica: it already holds all 151 messages.
        replica = next(p for p in (topology.primary.port, topology.replica.port) if p != primary_port)
        with redis.Redis(host="127.0.0.1", port=replica, socket_timeout=5) as direct:
            assert direct.zcard(store.keys.messages(session.id)) == 151
        contents = sorted(m.content for m in await store.aget_messages(session.id, owner=OWNER, limit=1000))
        assert await store.adelete_session(session.id, owner=OWNER)
        assert await store.aget_session(session.id, owner=OWNER) is None
        return str(primary_port), contents

    port, contents = asyncio.run(main())
    assert contents == sorted([*(f"m{i}" for i in range(150)), "done"])
    assert _role(int(port)) == "master"

"""Redis Cluster: the store's battery on a real local 3-primary cluster, through ``ClusterClient``.

The store's own tests (tests/test_store.py, tests/test_store_redis.py) run here a second time, their
``store``/``any_store``/``key_prefix`` fixtures resolving to this module's cluster ones; the tests below
them cover what only a cluster has. Every Lua script call the cluster receives is recorded: its keys must
share one hash slot (a cluster would refuse anything else with CROSSSLOT; redis-py refuses it even before
sending).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
import redis
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from redis.cluster import RedisCluster

from conversations.checks import check_settings
from conversations.exceptions import SessionNotFound, StoreUnavailable
from conversations.store import ConversationStore, StoreConfig, codec, get_store, new_session_id
from tests import test_lifecycle, test_store, test_store_redis
from tests.factories import put_legacy_session, seed_value
from tests.redis_servers import (
    LocalCluster,
    local_cluster,  # noqa: F401  (the module-scoped ``cluster`` fixture)
    wait_until,
)
from tests.test_lifecycle import recorded  # noqa: F401  (the signal recorder the lifecycle tests use)

pytestmark = pytest.mark.redis


@pytest.fixture
def cluster_alias(settings: Any, cluster: LocalCluster) -> str:
    """A django-redis cache on the cluster via ``ClusterClient``, and CONVERSATIONS pointing at it."""
    alias = f"cluster-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {**settings.CACHES, alias: cluster.cache_config()}
    settings.CONVERSATIONS = {"CACHE_ALIAS": alias, "KEY_PREFIX": f"ct-{uuid.uuid4().hex[:10]}"}
    return alias


@pytest.fixture(autouse=True)
def script_keys(cluster_alias: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """Records the keys of every script call (EVALSHA/EVAL) a test sends; checks each stays in one slot."""
    client = get_store().client
    original = client.execute_command
    calls: list[tuple[Any, ...]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        if str(args[0]).upper() in {"EVALSHA", "EVAL"}:
            numkeys = int(args[2])
            calls.append(tuple(args[3 : 3 + numkeys]))
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", recording)
    yield calls
    for keys in calls:
        assert len({client.keyslot(key) for key in keys}) == 1, f"a script spanned slots: {keys}"


@pytest.fixture
def store(cluster_alias: str) -> ConversationStore:
    return get_store()


@pytest.fixture
def any_store(store: ConversationStore) -> ConversationStore:
    return store


@pytest.fixture
def key_prefix(settings: Any, cluster_alias: str) -> str:
    return str(settings.CONVERSATIONS["KEY_PREFIX"])


# ---------------------------------------------------------------- the store's battery, on the cluster
# Left out: the tests that expect a listing to drop a just-deleted session's entry at once (on a cluster
# entries younger than 10 s stay, see below), that bound the index TTL by the session's (a cluster's is
# 10 s longer), and those that need the single server (other processes on REDIS_URL, fakeredis).

test_create_and_get_roundtrip = test_store.test_create_and_get_roundtrip
test_messages_keep_order_ids_and_sources = test_store.test_messages_keep_order_ids_and_sources
test_save_message_returns_updated_session_like_the_seed = (
    test_store.test_save_message_returns_updated_session_like_the_seed
)
test_get_messages_windows = test_store.test_get_messages_windows
test_update_session = test_store.test_update_session
test_delete_session = test_store.test_delete_session
test_owner_isolation_on_every_method = test_store.test_owner_isolation_on_every_method
test_unowned_namespace_is_separate = test_store.test_unowned_namespace_is_separate
test_list_sessions_most_recent_first_and_paginated = (
    test_store.test_list_sessions_most_recent_first_and_paginated
)
test_delete_owner_sessions_erases_only_that_owner = (
    test_store.test_delete_owner_sessions_erases_only_that_owner
)
test_idempotent_append_returns_first_message = test_store.test_idempotent_append_returns_first_message
test_idempotent_create_returns_first_session = test_store.test_idempotent_create_returns_first_session
test_corrupt_message_is_skipped_and_logged = test_store.test_corrupt_message_is_skipped_and_logged
test_corrupt_metadata_reads_as_empty = test_store.test_corrupt_metadata_reads_as_empty
test_layout_version_is_written = test_store.test_layout_version_is_written
test_listing_skips_many_dead_entries_without_losing_live_ones = (
    test_store.test_listing_skips_many_dead_entries_without_losing_live_ones
)
test_eight_threads_lose_and_duplicate_nothing = test_store_redis.test_eight_threads_lose_and_duplicate_nothing
test_create_never_overwrites = test_store_redis.test_create_never_overwrites
test_signals_fire_once_per_event = test_store_redis.test_signals_fire_once_per_event
test_real_store_uses_the_configured_prefix = test_store_redis.test_real_store_uses_the_configured_prefix


# The message lifecycle (tests/test_lifecycle.py): each op renews every key, keeps the index, signals;
# another owner changes nothing; concurrent extends; removals and cursors; layout-1 migration.
test_each_op_renews_every_key_bumps_the_index_and_signals_once = (
    test_lifecycle.test_each_op_renews_every_key_bumps_the_index_and_signals_once
)
test_another_owner_gets_session_not_found_and_changes_nothing = (
    test_lifecycle.test_another_owner_gets_session_not_found_and_changes_nothing
)
test_eight_threads_extending_one_message_lose_nothing = (
    test_lifecycle.test_eight_threads_extending_one_message_lose_nothing
)
test_pages_and_old_cursors_survive_removals = test_lifecycle.test_pages_and_old_cursors_survive_removals
test_an_idempotent_retry_after_its_message_was_removed_appends_nothing = (
    test_lifecycle.test_an_idempotent_retry_after_its_message_was_removed_appends_nothing
)
test_append_messages_is_one_round_trip_with_consecutive_ids = (
    test_lifecycle.test_append_messages_is_one_round_trip_with_consecutive_ids
)
test_context_is_leading_system_messages_then_the_newest_that_fit = (
    test_lifecycle.test_context_is_leading_system_messages_then_the_newest_that_fit
)
test_context_is_one_round_trip = test_lifecycle.test_context_is_one_round_trip
test_every_call_migrates_a_layout_1_session_on_first_touch = (
    test_lifecycle.test_every_call_migrates_a_layout_1_session_on_first_touch
)
test_another_owners_layout_1_session_is_not_migrated = (
    test_lifecycle.test_another_owners_layout_1_session_is_not_migrated
)
test_a_layout_1_session_expiring_before_its_migration_is_not_found = (
    test_lifecycle.test_a_layout_1_session_expiring_before_its_migration_is_not_found
)


# ---------------------------------------------------------------- what only a cluster has


def test_cluster_settings_pass_the_checks_and_give_a_cluster_store(store: ConversationStore) -> None:
    assert check_settings() == []
    assert isinstance(store.client, RedisCluster)
    assert store.is_cluster


def test_every_operation_runs_and_each_script_stays_in_one_slot(
    store: ConversationStore, script_keys: list[tuple[Any, ...]]
) -> None:
    session = store.create_session({"topic": "slots"}, owner="alice", title="first")
    store.append_message(session.id, role="user", content="hi", owner="alice", sources=[{"url": "u"}])
    store.update_session(session.id, owner="alice", title="renamed")
    assert store.count_messages(session.id, owner="alice") == 1
    assert [m.content for m in store.get_messages(session.id, owner="alice", last=5)] == ["hi"]
    assert store.get_session_summary(session.id, owner="alice").title == "renamed"
    assert store.save_message(session.id, role="assistant", content="hello", owner="alice") is not None
    assert [s.id for s in store.list_sessions(owner="alice")] == [session.id]
    assert store.delete_session(session.id, owner="alice") is True
    assert store.get_session(session.id, owner="alice") is None
    # Scripts did the work (create, append, update, read, delete), several keys per call.
    assert len(script_keys) >= 8
    # A delete names every key a session may have (meta, messages, idempotency, events, and the
    # message list of layout 1): all in the session's slot.
    assert max(len(keys) for keys in script_keys) == 5


def test_every_lifecycle_operation_runs_and_each_script_stays_in_one_slot(
    store: ConversationStore, script_keys: list[tuple[Any, ...]]
) -> None:
    sid = put_legacy_session(store.client, store.keys, owner="alice", messages=2)
    assert [m.content for m in store.get_messages(sid, owner="alice")] == ["m1", "m2"]  # migrated
    store.append_messages(
        sid,
        [{"role": "assistant", "content": "", "status": "in_progress"}, {"role": "tool", "content": "t"}],
        owner="alice",
    )
    store.extend_message(sid, 3, "streamed", owner="alice")
    store.update_message(sid, 3, owner="alice", status="completed", token_count=1, data={"k": 1})
    assert store.get_message(sid, 3, owner="alice").content == "streamed"
    assert [m.id for m in store.get_context(sid, max_tokens=3, owner="alice")] == [2, 3, 4]
    assert store.delete_message(sid, 1, owner="alice") is True
    assert store.pop_message(sid, owner="alice").id == 4  # type: ignore[union-attr]
    assert store.truncate_messages(sid, after=2, owner="alice") == 1
    assert store.append_message(sid, role="user", content="again", owner="alice").id == 5
    events, _ = store.events_since(sid, "0-0", owner="alice")
    assert [e.kind for e in events][-3:] == ["message.removed", "messages.truncated", "message.created"]
    ran = set(script_keys)
    assert len(script_keys) >= 12
    # MIGRATE takes the message list of layout 1 beside the session's keys: one slot all the same.
    assert (store.keys.meta(sid), store.keys.messages(sid), store.keys.legacy_messages(sid)) in ran


def test_events_go_out_with_spublish_in_the_sessions_slot(store: ConversationStore) -> None:
    sid = store.create_session(owner="alice").id
    channel = store.events_channel(sid)
    node = store.client.get_node_from_key(channel)
    listener = redis.Redis(host=node.host, port=node.port, socket_timeout=5)
    sharded = listener.pubsub()
    sharded.ssubscribe(channel)
    plain = listener.pubsub()
    plain.subscribe(channel)
    assert sharded.get_sharded_message(timeout=2)["type"] == "ssubscribe"  # type: ignore[index]
    assert plain.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    message = store.append_message(sid, role="assistant", content="", owner="alice", status="in_progress")
    store.extend_message(sid, message.id, "hi", owner="alice")
    store.delete_message(sid, message.id, owner="alice")
    got = []
    for _ in range(3):
        raw = sharded.get_sharded_message(timeout=2)
        assert raw is not None
        assert raw["type"] == "smessage"
        got.append(codec.decode_published(raw["data"]))
    assert [(e.kind, e.message_id) for e in got if e is not None] == [
        ("message.created", 1),
        ("message.extended", 1),
        ("message.removed", 1),
    ]
    assert plain.get_message(timeout=0.3) is None  # not PUBLISHed: the channel is sharded
    sharded.close()
    plain.close()
    listener.close()


def test_sessions_expire_whole_and_are_never_recreated(settings: Any, store: ConversationStore) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "SESSION_TTL": 1}
    short = get_store()
    session = short.create_session(owner="alice")
    short.append_message(session.id, role="user", content="soon gone", owner="alice", idempotency_key="k")
    keys = [*short.keys.session_keys(session.id)]
    ttls = [short.client.pttl(key) for key in keys]
    assert all(0 < ttl <= 1000 for ttl in ttls), ttls
    # The owner index outlives its newest session by the cluster grace period, never the reverse.
    index_ttl = short.client.pttl(short.keys.owner_index("alice"))
    assert 1000 < index_ttl <= 11_000
    wait_until(lambda: short.get_session(session.id, owner="alice") is None, timeout=10, what="expiry")
    with pytest.raises(SessionNotFound):
        short.append_message(session.id, role="user", content="too late", owner="alice")
    assert [short.client.exists(key) for key in keys] == [0, 0, 0, 0]
    assert short.list_sessions(owner="alice") == []


def test_listing_pages_through_sessions_on_every_node_most_recent_first(store: ConversationStore) -> None:
    ids = [store.create_session(owner="alice", title=f"s{i}").id for i in range(25)]
    nodes = {store.client.get_node_from_key(store.keys.meta(sid)).name for sid in ids}
    assert len(nodes) == 3, "the sessions should be spread over every primary"
    touched = ids[3:8]
    for sid in touched:
        time.sleep(0.003)  # distinct milliseconds: a strict order to check
        store.append_message(sid, role="user", content="bump", owner="alice")
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        page = store.list_sessions_page(owner="alice", limit=10, cursor=cursor)
        seen.extend(s.id for s in page.sessions)
        sizes.append(len(page.sessions))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sizes == [10, 10, 5]
    assert sorted(seen) == sorted(ids)
    assert seen[:5] == list(reversed(touched))
    assert store.list_sessions(owner="bob") == []


def test_erasing_an_owner_deletes_every_session_on_every_node(store: ConversationStore) -> None:
    erased = [store.create_session(owner="alice").id for _ in range(12)]
    for sid in erased:
        store.append_message(sid, role="user", content="x", owner="alice")
    others = [store.create_session(owner="bob").id for _ in range(2)]
    assert store.delete_owner_sessions("alice") == 12
    assert store.list_sessions(owner="alice") == []
    assert all(store.get_session(sid, owner="alice") is None for sid in erased)
    assert sorted(s.id for s in store.list_sessions(owner="bob")) == sorted(others)
    metas = {key.decode() for key in store.client.scan_iter(match=store.keys.meta_pattern(), count=1000)}
    assert metas == {store.keys.meta(sid) for sid in others}
    assert store.client.exists(store.keys.owner_index("alice")) == 0


def test_erasure_keeps_the_entry_of_a_create_in_flight(store: ConversationStore) -> None:
    # On a cluster a create lists its session first and writes it a moment later. Erasure must not drop
    # that entry (the session would land unlisted); an old entry without a session is just dropped.
    index = store.keys.owner_index("alice")
    in_flight, long_gone = new_session_id(), new_session_id()
    now_ms = int(time.time() * 1000)
    store.client.zadd(index, {in_flight: now_ms, long_gone: now_ms - 60_000})
    assert store.delete_owner_sessions("alice") == 0
    assert store.client.zscore(index, in_flight) is not None
    assert store.client.zscore(index, long_gone) is None


def test_listings_prune_old_dangling_entries_but_not_fresh_ones(store: ConversationStore) -> None:
    live = store.create_session(owner="alice")
    index = store.keys.owner_index("alice")
    fresh, old = new_session_id(), new_session_id()
    store.client.zadd(index, {fresh: int(time.time() * 1000), old: int(time.time() * 1000) - 60_000})
    assert [s.id for s in store.list_sessions(owner="alice")] == [live.id]
    assert store.client.zscore(index, fresh) is not None  # may be a create in flight: kept
    assert store.client.zscore(index, old) is None


def test_a_failed_index_update_does_not_fail_an_append(
    store: ConversationStore, caplog: pytest.LogCaptureFixture
) -> None:
    session = store.create_session(owner="alice")
    index = store.keys.owner_index("alice")
    store.client.delete(index)
    store.client.set(index, "not a sorted set")  # every index write now fails (WRONGTYPE)
    with caplog.at_level(logging.WARNING, logger="conversations"):
        message = store.append_message(session.id, role="user", content="kept", owner="alice")
    assert message.id == 1
    assert [m.content for m in store.get_messages(session.id, owner="alice")] == ["kept"]
    assert "Could not update the owner index" in caplog.text
    store.client.delete(index)
    # Its next successful write lists the session again.
    store.append_message(session.id, role="user", content="again", owner="alice")
    assert [s.id for s in store.list_sessions(owner="alice")] == [session.id]


def _report(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("conversations_report", "--format", "json", *args, stdout=out, stderr=StringIO())
    return dict(json.loads(out.getvalue()))


def test_report_scans_every_node_and_repair_restores_the_index(store: ConversationStore) -> None:
    ids = [store.create_session(owner="alice").id for _ in range(9)]
    for sid in ids:
        store.append_message(sid, role="user", content="x", owner="alice")
    index = store.keys.owner_index("alice")
    lost = ids[0]
    store.client.zrem(index, lost)  # drift: a live session missing from its index
    store.client.zadd(index, {new_session_id(): int(time.time() * 1000) - 60_000})  # and a stale entry
    assert lost not in {s.id for s in store.list_sessions_page(owner="alice", limit=100).sessions}

    before = _report("--repair")
    assert before["sessions"] == 9  # found on all three primaries
    assert before["index_drift"]["missing_entries"] == 1
    assert before["index_drift"]["repaired_missing"] == 1
    assert {s.id for s in store.list_sessions(owner="alice")} == set(ids)
    after = _report()
    assert after["index_drift"]["missing_entries"] == 0
    assert after["index_drift"]["stale_entries"] == 0


def test_purge_deletes_on_every_node(store: ConversationStore) -> None:
    ids = [store.create_session(owner="alice").id for _ in range(6)]
    kept = store.create_session(owner="bob")
    call_command("conversations_purge", "--owner", "alice", "--noinput", stdout=StringIO(), stderr=StringIO())
    assert all(store.get_session(sid, owner="alice") is None for sid in ids)
    assert store.list_sessions(owner="alice") == []
    assert [s.id for s in store.list_sessions(owner="bob")] == [kept.id]


def test_the_cluster_alias_also_works_as_a_django_cache_for_single_keys(
    cluster_alias: str, store: ConversationStore
) -> None:
    cache = caches[cluster_alias]
    cache.set("greeting", {"hello": "world"}, 30)
    assert cache.get("greeting") == {"hello": "world"}
    cache.set("hits", 1, 30)
    assert cache.incr("hits") == 2
    assert cache.delete("greeting") is True
    assert cache.get("greeting") is None


def test_seed_import_reads_every_node_and_lists_what_it_wrote(store: ConversationStore) -> None:
    prefix = f"{store.keys.prefix}-seed:"
    now = time.time()
    sources = {f"{prefix}{uuid.uuid4().hex[:8]}": f"question {i}" for i in range(6)}
    for key, content in sources.items():
        value = seed_value(
            key.removeprefix(prefix),
            created_at=now - 60,
            updated_at=now - 30,
            messages=[{"role": "user", "content": content, "timestamp": now - 30}],
        )
        store.client.set(key, value, ex=600)
    assert len({store.client.get_node_from_key(key).name for key in sources}) > 1
    out = StringIO()
    options = ("--source-prefix", prefix, "--owner", "alice")
    call_command("conversations_import", *options, stdout=out, stderr=StringIO())
    imported = store.list_sessions(owner="alice")
    assert len(imported) == 6
    contents = set()
    for summary in imported:
        session = store.get_session(summary.id, owner="alice")
        assert session is not None
        contents.update(m.content for m in session.messages)
    assert contents == set(sources.values())
    # Idempotent: a second run imports nothing new.
    call_command("conversations_import", *options, stdout=StringIO(), stderr=StringIO())
    assert len(store.list_sessions(owner="alice")) == 6


def test_closing_the_cache_connections_leaves_the_store_working(
    settings: Any, cluster_alias: str, store: ConversationStore
) -> None:
    # Django closes caches after each request; with CLOSE_CONNECTION django-redis disconnects them.
    settings.CACHES[cluster_alias]["OPTIONS"]["CLOSE_CONNECTION"] = True
    session = get_store().create_session(owner="alice")
    caches[cluster_alias].close()
    assert get_store().get_session(session.id, owner="alice") is not None


def test_replica_acks_are_refused_on_a_cluster(store: ConversationStore) -> None:
    with pytest.raises(ImproperlyConfigured, match="REPLICA_ACKS"):
        ConversationStore(store.client, StoreConfig(replica_acks=1))


def test_a_write_whose_reply_times_out_is_not_run_again(
    settings: Any, cluster: LocalCluster, cluster_alias: str, store: ConversationStore
) -> None:
    # redis-py's RedisCluster retries a timed-out command on its own by default; for a write script
    # that means a message appended several times. ClusterClient turns those retries off.
    fast = f"{cluster_alias}-fast"
    config = settings.CACHES[cluster_alias]
    settings.CACHES = {
        **settings.CACHES,
        fast: {**config, "OPTIONS": {**config["OPTIONS"], "SOCKET_TIMEOUT": 0.2}},
    }
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "CACHE_ALIAS": fast}
    impatient = get_store()
    session = impatient.create_session(owner="alice")
    impatient.append_message(session.id, role="user", content="first", owner="alice")
    port = impatient.client.get_node_from_key(impatient.keys.meta(session.id)).port
    node = next(n for n in cluster.nodes if n.port == port)
    # Keep that node busy for 0.8 s: the append arrives, waits, then runs, long after the client gave up.
    busy = """
local t = redis.call('TIME')
while true do
  local u = redis.call('TIME')
  if (u[1] - t[1]) * 1e6 + u[2] - t[2] > 800000 then return 1 end
end
"""
    blocker = threading.Thread(target=lambda: node.admin().eval(busy, 0))
    blocker.start()
    time.sleep(0.1)
    with pytest.raises(StoreUnavailable):
        impatient.append_message(session.id, role="user", content="once", owner="alice")
    blocker.join(10)
    assert [m.content for m in store.get_messages(session.id, owner="alice")] == ["first", "once"]


# ---------------------------------------------------------------- the async twins, on the cluster


def test_the_async_twins_create_append_read_list_and_delete_through_the_cluster(
    store: ConversationStore,
) -> None:
    """Through ``redis.asyncio.cluster.RedisCluster`` (which refuses a script whose keys span slots
    before sending it), with a burst larger than a node's default pool (redis-py 6+: 100)."""
    import asyncio

    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    from conversations.clients import get_async_redis_client

    async def main() -> None:
        assert isinstance(get_async_redis_client(), AsyncRedisCluster)
        sessions = [await store.acreate_session(owner="alice", title=f"s{i}") for i in range(8)]
        await asyncio.gather(
            *(
                store.aappend_message(s.id, role="user", content=f"{s.title}:{i}", owner="alice")
                for s in sessions
                for i in range(40)
            )
        )
        for s in sessions:
            messages = await store.aget_messages(s.id, owner="alice", limit=100)
            assert sorted(m.content for m in messages) == sorted(f"{s.title}:{i}" for i in range(40))
            assert [m.id for m in messages] == list(range(1, 41))
            head = await store.aget_session_head(s.id, owner="alice", last=2)
            assert head.message_count == 40
            assert [m.id for m in head.messages] == [39, 40]
        listed = await store.alist_sessions(owner="alice")
        assert sorted(x.id for x in listed) == sorted(s.id for s in sessions)
        page = await store.alist_sessions_page(owner="alice", limit=4)
        assert len(page.sessions) == 4
        assert page.next_cursor is not None
        assert await store.adelete_session(sessions[0].id, owner="alice")
        assert await store.aget_session(sessions[0].id, owner="alice") is None
        assert await store.adelete_owner_sessions("alice") == 7
        with pytest.raises(SessionNotFound):
            await store.acount_messages(sessions[1].id, owner="alice")

    asyncio.run(main())
    # The sync side sees what the async one did.
    assert store.list_sessions(owner="alice") == []

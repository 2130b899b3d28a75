"""What only a real Redis can prove: atomicity under concurrency, expiry, and failure behaviour."""

from __future__ import annotations

import multiprocessing
import os
import secrets
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis

from conversations import signals
from conversations.exceptions import SessionNotFound, StoreUnavailable
from conversations.store import ConversationStore, StoreConfig, get_store
from conversations.store.keys import SESSION_ID_RE

pytestmark = pytest.mark.redis

WRITERS = 8
PER_WRITER = 250


def _assert_complete_transcript(store: ConversationStore, session_id: str, writers: int) -> None:
    messages = store.get_messages(session_id, limit=writers * PER_WRITER + 10)
    assert len(messages) == writers * PER_WRITER
    assert [m.id for m in messages] == list(range(1, writers * PER_WRITER + 1))
    contents = [m.content for m in messages]
    assert len(set(contents)) == len(contents), "a message was duplicated"
    for writer in range(writers):
        own = [int(c.split(":")[1]) for c in contents if c.startswith(f"w{writer}:")]
        assert own == list(range(PER_WRITER)), f"writer {writer}'s order was not kept"
    assert store.count_messages(session_id) == writers * PER_WRITER


def test_eight_threads_lose_and_duplicate_nothing(store: ConversationStore) -> None:
    session = store.create_session()
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            barrier.wait()
            for i in range(PER_WRITER):
                store.append_message(session.id, role="user", content=f"w{writer}:{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _assert_complete_transcript(store, session.id, WRITERS)


def _process_writer(redis_url: str, prefix: str, session_id: str, writer: int, start: Any) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    process_store = ConversationStore(client, StoreConfig(key_prefix=prefix))
    start.wait()
    for i in range(PER_WRITER):
        process_store.append_message(session_id, role="user", content=f"w{writer}:{i}")


def test_four_processes_lose_and_duplicate_nothing(store: ConversationStore, redis_url: str) -> None:
    session = store.create_session()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_process_writer, args=(redis_url, store.keys.prefix, session.id, w, start))
        for w in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    _assert_complete_transcript(store, session.id, 4)


def _session_ttls(store: ConversationStore, session_id: str) -> dict[str, int]:
    return {key: store.client.pttl(key) for key in store.keys.session_keys(session_id)}


def test_every_key_has_a_ttl_and_writes_renew_all(settings: Any, key_prefix: str) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "SESSION_TTL": 2}
    store = get_store()
    session = store.create_session(owner="ttl")
    store.append_message(session.id, role="user", content="a", owner="ttl", idempotency_key="k")
    ttls = _session_ttls(store, session.id)
    assert all(0 < ttl <= 2000 for ttl in ttls.values()), ttls
    index = store.keys.owner_index("ttl")
    assert 0 < store.client.pttl(index) <= 2000
    time.sleep(1.2)
    store.append_message(session.id, role="user", content="b", owner="ttl")
    renewed = _session_ttls(store, session.id)
    assert all(ttl > 1500 for ttl in renewed.values()), renewed
    time.sleep(1.2)
    store.update_session(session.id, owner="ttl", title="still here")
    assert all(ttl > 1500 for ttl in _session_ttls(store, session.id).values())
    # Every key the prefix holds carries a TTL, except the layout version marker.
    for key in store.client.scan_iter(match=f"{key_prefix}:*"):
        if key.decode() != store.keys.layout():
            assert store.client.pttl(key) > 0, key


def test_expired_session_is_gone_and_never_recreated(settings: Any, key_prefix: str) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "SESSION_TTL": 1}
    store = get_store()
    session = store.create_session(owner="exp")
    store.append_message(session.id, role="user", content="a", owner="exp")
    time.sleep(1.3)
    assert store.get_session(session.id, owner="exp") is None
    with pytest.raises(SessionNotFound):
        store.append_message(session.id, role="user", content="late", owner="exp")
    with pytest.raises(SessionNotFound):
        store.update_session(session.id, owner="exp", title="late")
    assert store.delete_session(session.id, owner="exp") is False
    assert all(store.client.exists(key) == 0 for key in store.keys.session_keys(session.id))
    assert store.list_sessions(owner="exp") == []
    assert store.client.zcard(store.keys.owner_index("exp")) == 0


def test_index_forgets_an_expired_session_while_others_live(settings: Any, key_prefix: str) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "SESSION_TTL": 2}
    store = get_store()
    old = store.create_session(owner="mix")
    time.sleep(1.2)
    fresh = store.create_session(owner="mix")
    time.sleep(1.0)  # `old` has expired; `fresh` (and the index, renewed by it) live on
    assert [s.id for s in store.list_sessions(owner="mix")] == [fresh.id]
    assert store.client.zscore(store.keys.owner_index("mix"), old.id) is None


def test_create_never_overwrites(store: ConversationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    first = store.create_session({"who": "first"})
    store.append_message(first.id, role="user", content="precious")
    ids = iter([first.id, "B" * 22])
    monkeypatch.setattr("conversations.store.operations.new_session_id", lambda: next(ids))
    second = store.create_session({"who": "second"})
    assert second.id == "B" * 22
    kept = store.get_session(first.id)
    assert kept is not None
    assert kept.metadata == {"who": "first"}
    assert [m.content for m in kept.messages] == ["precious"]


def test_ids_are_distinct_and_carry_128_bits() -> None:
    from conversations.store import new_session_id

    ids = [new_session_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(SESSION_ID_RE.match(i) for i in ids)
    # 22 URL-safe base64 characters = 16 random bytes = 128 bits.
    assert secrets.token_urlsafe(16).__len__() == len(ids[0]) == 22


def _keys_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_keys", {}).get("calls", 0))


def test_listing_never_sends_keys(store: ConversationStore, redis_client: redis.Redis) -> None:
    for i in range(30):
        store.create_session(owner="k", title=str(i))
    before = _keys_calls(redis_client)
    assert len(store.list_sessions(owner="k")) == 30
    store.list_sessions_page(owner="k", limit=5)
    store.delete_owner_sessions("k")
    assert _keys_calls(redis_client) == before


def test_unreachable_redis_raises_store_unavailable_fast(settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "CACHE_ALIAS": "unreachable"}
    store = get_store()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        store.create_session()
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    for call in (
        lambda: store.get_session("A" * 22),
        lambda: store.append_message("A" * 22, role="user", content="x"),
        lambda: store.list_sessions(),
        lambda: store.delete_session("A" * 22),
    ):
        with pytest.raises(StoreUnavailable):
            call()
    assert time.monotonic() - started < 30  # a hang would be minutes; this is a generous bound


def test_signals_fire_once_per_event(store: ConversationStore) -> None:
    seen: Counter[str] = Counter()
    payloads: dict[str, Any] = {}

    def receiver(name: str) -> Any:
        def handle(sender: Any, **kwargs: Any) -> None:
            seen[name] += 1
            payloads[name] = kwargs

        return handle

    handlers = {name: receiver(name) for name in ("created", "appended", "deleted")}
    signals.session_created.connect(handlers["created"])
    signals.message_appended.connect(handlers["appended"])
    signals.session_deleted.connect(handlers["deleted"])
    try:
        session = store.create_session(owner="sig")
        store.append_message(session.id, role="user", content="x", owner="sig", idempotency_key="i")
        store.append_message(session.id, role="user", content="x", owner="sig", idempotency_key="i")
        store.delete_session(session.id, owner="sig")
        store.delete_session(session.id, owner="sig")
    finally:
        signals.session_created.disconnect(handlers["created"])
        signals.message_appended.disconnect(handlers["appended"])
        signals.session_deleted.disconnect(handlers["deleted"])
    assert seen == {"created": 1, "appended": 1, "deleted": 1}
    assert payloads["created"]["session"].id == session.id
    assert payloads["appended"]["message"].content == "x"
    assert payloads["deleted"]["session_id"] == session.id


@pytest.mark.skipif(os.name != "posix", reason="spawn-based processes")
def test_real_store_uses_the_configured_prefix(store: ConversationStore, key_prefix: str) -> None:
    session = store.create_session()
    assert store.client.exists(f"{key_prefix}:s:{{{session.id}}}:meta") == 1


def test_an_error_on_a_window_read_leaves_the_next_call_a_clean_connection(store: ConversationStore) -> None:
    """Reading the newest messages sends two commands at once: an error reply to the first must not leave
    the second's reply on the connection, where the next caller would read it as its own."""
    good = store.create_session(owner="o")
    for i in range(3):
        store.append_message(good.id, role="user", content=f"m{i}", owner="o")
    broken = store.create_session(owner="o")
    store.client.delete(store.keys.meta(broken.id))
    store.client.set(store.keys.meta(broken.id), "not a hash")
    for _ in range(3):
        with pytest.raises(redis.ResponseError):
            store.get_messages(broken.id, owner="o", last=2)
        assert [m.content for m in store.get_messages(good.id, owner="o", last=2)] == ["m1", "m2"]
        assert store.count_messages(good.id, owner="o") == 3


def test_a_client_with_another_encoding_packs_its_own_commands(redis_url: str, key_prefix: str) -> None:
    """The store packs commands with hiredis only for UTF-8 clients; others keep redis-py's packer."""
    client = redis.Redis.from_url(redis_url, encoding="latin-1", socket_timeout=5)
    try:
        store = ConversationStore(client, StoreConfig(key_prefix=key_prefix))
        session = store.create_session(owner="enc")
        store.append_message(session.id, role="user", content="café ☕", owner="enc")
        assert [m.content for m in store.get_messages(session.id, owner="enc", last=5)] == ["café ☕"]
    finally:
        client.close()

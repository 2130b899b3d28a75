"""Behaviour of the store's Python API, on fakeredis and on the real Redis alike."""

from __future__ import annotations

import itertools
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conversations.exceptions import IdempotencyConflict, InvalidInput, SessionFull, SessionNotFound
from conversations.store import ConversationStore, Session, StoreConfig


@pytest.fixture(params=["fake", "real"])
def any_store(request: pytest.FixtureRequest) -> ConversationStore:
    name = "fake_store" if request.param == "fake" else "store"
    return request.getfixturevalue(name)


def test_create_and_get_roundtrip(any_store: ConversationStore) -> None:
    created = any_store.create_session({"topic": "billing"}, owner="alice", title="Invoices")
    assert isinstance(created, Session)
    assert created.session_id == created.id
    assert created.metadata == {"topic": "billing"}
    assert created.created_at.tzinfo is UTC
    fetched = any_store.get_session(created.id, owner="alice")
    assert fetched is not None
    assert fetched.title == "Invoices"
    assert fetched.metadata == {"topic": "billing"}
    assert fetched.message_count == 0
    assert fetched.messages == []
    assert fetched.expires_at is not None
    assert timedelta(seconds=1700) < fetched.expires_at - datetime.now(UTC) <= timedelta(seconds=1800)


def test_messages_keep_order_ids_and_sources(any_store: ConversationStore) -> None:
    session = any_store.create_session(owner="alice")
    first = any_store.append_message(session.id, role="user", content="Hi", owner="alice")
    second = any_store.append_message(
        session.id,
        role="assistant",
        content="Héllo 👋",
        sources=[{"url": "https://example.com", "score": 0.9}],
        owner="alice",
    )
    assert (first.id, second.id) == (1, 2)
    assert second.sources == [{"url": "https://example.com", "score": 0.9}]
    fetched = any_store.get_session(session.id, owner="alice")
    assert fetched is not None
    assert [(m.id, m.role, m.content) for m in fetched.messages] == [
        (1, "user", "Hi"),
        (2, "assistant", "Héllo 👋"),
    ]
    assert fetched.message_count == 2
    assert fetched.messages[1].sources == [{"url": "https://example.com", "score": 0.9}]
    assert fetched.updated_at >= fetched.created_at
    assert isinstance(fetched.messages[0].timestamp, int)


def test_save_message_returns_updated_session_like_the_seed(any_store: ConversationStore) -> None:
    session = any_store.create_session()
    updated = any_store.save_message(session.id, role="user", content="one")
    assert updated is not None
    assert [m.content for m in updated.messages] == ["one"]
    assert any_store.save_message("A" * 22, role="user", content="x") is None


def test_get_messages_windows(any_store: ConversationStore) -> None:
    session = any_store.create_session(owner="o")
    for i in range(1, 11):
        any_store.append_message(session.id, role="user", content=f"m{i}", owner="o")

    def ids(**kwargs: Any) -> list[int]:
        return [m.id for m in any_store.get_messages(session.id, owner="o", **kwargs)]

    assert ids(last=3) == [8, 9, 10]
    assert ids(last=50) == list(range(1, 11))
    assert ids(limit=4) == [1, 2, 3, 4]
    assert ids(after=4, limit=3) == [5, 6, 7]
    assert ids(after=9, limit=3) == [10]
    assert ids(after=10) == []
    assert ids(before=5, limit=2) == [3, 4]
    assert ids(before=3, limit=10) == [1, 2]
    assert ids(before=1) == []
    assert ids(after=2, before=6) == [3, 4, 5]
    assert ids(after=2, before=6, limit=2) == [4, 5]
    assert any_store.count_messages(session.id, owner="o") == 10


@pytest.mark.parametrize(
    "kwargs", [{"limit": 0}, {"last": 0}, {"after": -1}, {"before": "3"}, {"limit": True}]
)
def test_get_messages_rejects_bad_windows(fake_store: ConversationStore, kwargs: dict[str, Any]) -> None:
    session = fake_store.create_session()
    with pytest.raises(InvalidInput):
        fake_store.get_messages(session.id, **kwargs)


def test_update_session(any_store: ConversationStore) -> None:
    session = any_store.create_session({"a": 1}, owner="o", title="old")
    updated = any_store.update_session(session.id, owner="o", title="new")
    assert (updated.title, updated.metadata) == ("new", {"a": 1})
    updated = any_store.update_session(session.id, owner="o", metadata={"b": 2})
    assert (updated.title, updated.metadata) == ("new", {"b": 2})
    fetched = any_store.get_session(session.id, owner="o")
    assert fetched is not None
    assert (fetched.title, fetched.metadata) == ("new", {"b": 2})
    with pytest.raises(SessionNotFound):
        any_store.update_session(session.id, owner="other", title="hijack")


def test_delete_session(any_store: ConversationStore) -> None:
    session = any_store.create_session(owner="o")
    any_store.append_message(session.id, role="user", content="x", owner="o")
    assert any_store.delete_session(session.id, owner="other") is False
    assert any_store.delete_session(session.id, owner="o") is True
    assert any_store.delete_session(session.id, owner="o") is False
    assert any_store.get_session(session.id, owner="o") is None
    with pytest.raises(SessionNotFound):
        any_store.append_message(session.id, role="user", content="late", owner="o")
    assert any_store.get_session(session.id, owner="o") is None


def test_owner_isolation_on_every_method(any_store: ConversationStore) -> None:
    mine = any_store.create_session({"secret": 1}, owner="alice")
    any_store.append_message(mine.id, role="user", content="private", owner="alice")
    for other in ("bob", None):
        assert any_store.get_session(mine.id, owner=other) is None
        assert any_store.save_message(mine.id, role="user", content="x", owner=other) is None
        assert any_store.delete_session(mine.id, owner=other) is False
        assert mine.id not in [s.id for s in any_store.list_sessions(owner=other)]
        with pytest.raises(SessionNotFound):
            any_store.append_message(mine.id, role="user", content="x", owner=other)
        with pytest.raises(SessionNotFound):
            any_store.get_messages(mine.id, owner=other)
        with pytest.raises(SessionNotFound):
            any_store.count_messages(mine.id, owner=other)
        with pytest.raises(SessionNotFound):
            any_store.update_session(mine.id, owner=other, title="x")
        assert any_store.delete_owner_sessions(other) == 0
    fetched = any_store.get_session(mine.id, owner="alice")
    assert fetched is not None
    assert [m.content for m in fetched.messages] == ["private"]
    assert fetched.metadata == {"secret": 1}


def test_unowned_namespace_is_separate(any_store: ConversationStore) -> None:
    unowned = any_store.create_session()
    assert any_store.get_session(unowned.id) is not None
    assert any_store.get_session(unowned.id, owner="alice") is None


def test_list_sessions_most_recent_first_and_paginated(any_store: ConversationStore) -> None:
    ids = [any_store.create_session(owner="lister", title=f"s{i}").id for i in range(7)]
    any_store.create_session(owner="someone-else")
    # Touch the first one so it becomes the most recently active (times have millisecond resolution).
    time.sleep(0.005)
    any_store.append_message(ids[0], role="user", content="bump", owner="lister")
    listed = any_store.list_sessions(owner="lister")
    assert listed[0].id == ids[0]
    assert sorted(s.id for s in listed) == sorted(ids)
    assert listed[0].message_count == 1
    assert all(a.updated_at >= b.updated_at for a, b in itertools.pairwise(listed))

    seen: list[str] = []
    cursor = None
    while True:
        page = any_store.list_sessions_page(owner="lister", limit=3, cursor=cursor)
        assert len(page.sessions) <= 3
        seen.extend(s.id for s in page.sessions)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [s.id for s in listed]


def test_listing_prunes_deleted_sessions_from_the_index(any_store: ConversationStore) -> None:
    keep = any_store.create_session(owner="p")
    gone = any_store.create_session(owner="p")
    # Simulate a session that vanished behind the index's back (eviction, manual DEL).
    any_store.client.delete(*any_store.keys.session_keys(gone.id))
    assert [s.id for s in any_store.list_sessions(owner="p")] == [keep.id]
    assert any_store.client.zscore(any_store.keys.owner_index("p"), gone.id) is None


def test_bad_cursor_is_invalid_input(fake_store: ConversationStore) -> None:
    for cursor in ["garbage", "", "bm90LWEtY3Vyc29y"]:
        with pytest.raises(InvalidInput) as info:
            fake_store.list_sessions_page(cursor=cursor)
        assert info.value.field == "cursor"


def test_delete_owner_sessions_erases_only_that_owner(any_store: ConversationStore) -> None:
    for _ in range(5):
        s = any_store.create_session(owner="erase-me")
        any_store.append_message(s.id, role="user", content="x", owner="erase-me")
    survivor = any_store.create_session(owner="keep-me")
    assert any_store.delete_owner_sessions("erase-me") == 5
    assert any_store.list_sessions(owner="erase-me") == []
    assert any_store.get_session(survivor.id, owner="keep-me") is not None


def test_session_full(fake_redis: Any) -> None:
    store = ConversationStore(fake_redis, StoreConfig(key_prefix="full", max_messages=3))
    session = store.create_session()
    for i in range(3):
        store.append_message(session.id, role="user", content=str(i))
    with pytest.raises(SessionFull):
        store.append_message(session.id, role="user", content="one too many")
    assert store.count_messages(session.id) == 3


def test_idempotent_append_returns_first_message(any_store: ConversationStore) -> None:
    session = any_store.create_session(owner="o")
    first = any_store.append_message(session.id, role="user", content="hi", owner="o", idempotency_key="k1")
    again = any_store.append_message(session.id, role="user", content="hi", owner="o", idempotency_key="k1")
    assert again == first
    assert any_store.count_messages(session.id, owner="o") == 1
    with pytest.raises(IdempotencyConflict):
        any_store.append_message(session.id, role="user", content="other", owner="o", idempotency_key="k1")
    other = any_store.append_message(session.id, role="user", content="hi", owner="o", idempotency_key="k2")
    assert other.id == 2


def test_idempotent_create_returns_first_session(any_store: ConversationStore) -> None:
    first = any_store.create_session({"a": 1}, owner="o", title="t", idempotency_key="c1")
    again = any_store.create_session({"a": 1}, owner="o", title="t", idempotency_key="c1")
    assert again.id == first.id
    assert len(any_store.list_sessions(owner="o")) == 1
    with pytest.raises(IdempotencyConflict):
        any_store.create_session({"a": 2}, owner="o", title="t", idempotency_key="c1")
    # Keys are scoped per owner.
    assert any_store.create_session({"a": 1}, owner="p", title="t", idempotency_key="c1").id != first.id


BAD_INPUTS: list[tuple[str, dict[str, Any]]] = [
    ("role", {"role": "wizard"}),
    ("role", {"role": None}),
    ("content", {"content": 5}),
    ("content", {"content": "x" * 32_001}),
    ("sources", {"sources": "not a list"}),
    ("sources", {"sources": ["not an object"]}),
    ("sources", {"sources": [{}] * 51}),
    ("sources", {"sources": [{"n": float("nan")}]}),
    ("sources", {"sources": [{"n": 2**70}]}),
    ("sources", {"sources": [{"x": "y" * 70_000}]}),
    ("idempotency_key", {"idempotency_key": ""}),
    ("idempotency_key", {"idempotency_key": "k" * 256}),
    ("idempotency_key", {"idempotency_key": "new\nline"}),
    ("owner", {"owner": ""}),
    ("owner", {"owner": 42}),
]


@pytest.mark.parametrize(("field", "override"), BAD_INPUTS)
def test_append_rejects_bad_input_before_writing(
    fake_store: ConversationStore, field: str, override: dict[str, Any]
) -> None:
    session = fake_store.create_session()
    kwargs: dict[str, Any] = {"role": "user", "content": "ok", **override}
    with pytest.raises(InvalidInput) as info:
        fake_store.append_message(session.id, **kwargs)
    assert info.value.field == field
    assert str(info.value)
    assert fake_store.count_messages(session.id) == 0


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


@pytest.mark.parametrize(
    "metadata",
    [["a list"], "text", {"x": "y" * 17_000}, _nested(17), {1: "non-string key"}, {"s": {1, 2}}],
)
def test_create_rejects_bad_metadata(fake_store: ConversationStore, metadata: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        fake_store.create_session(metadata)
    assert info.value.field == "metadata"
    assert fake_store.list_sessions() == []


def test_metadata_at_the_depth_limit_is_accepted(fake_store: ConversationStore) -> None:
    session = fake_store.create_session(_nested(16))
    fetched = fake_store.get_session(session.id)
    assert fetched is not None
    assert fetched.metadata == _nested(16)


def test_title_limits(fake_store: ConversationStore) -> None:
    with pytest.raises(InvalidInput):
        fake_store.create_session(title="t" * 201)
    with pytest.raises(InvalidInput):
        fake_store.create_session(title=7)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_id", ["", "short", "*", "a:b", "{x}", "x\ny" * 6, "é" * 22, "A" * 23, None, 12])
def test_malformed_ids_are_not_found_and_build_no_key(fake_store: ConversationStore, bad_id: Any) -> None:
    before = set(fake_store.client.keys("*"))
    assert fake_store.get_session(bad_id) is None
    assert fake_store.delete_session(bad_id) is False
    with pytest.raises(SessionNotFound):
        fake_store.append_message(bad_id, role="user", content="x")
    with pytest.raises(SessionNotFound):
        fake_store.get_messages(bad_id)
    assert set(fake_store.client.keys("*")) == before


def test_corrupt_message_is_skipped_and_logged(
    any_store: ConversationStore, caplog: pytest.LogCaptureFixture
) -> None:
    session = any_store.create_session()
    any_store.append_message(session.id, role="user", content="good 1")
    # A member that is not JSON, where message 2 would be (ids are scores of the message set).
    any_store.client.zadd(any_store.keys.messages(session.id), {b"{not json": 2})
    any_store.client.hset(any_store.keys.meta(session.id), mapping={"count": 2, "seq": 2})
    any_store.append_message(session.id, role="user", content="good 2")
    with caplog.at_level(logging.WARNING, logger="conversations"):
        fetched = any_store.get_session(session.id)
    assert fetched is not None
    assert [m.content for m in fetched.messages] == ["good 1", "good 2"]
    assert [m.id for m in fetched.messages] == [1, 3]
    assert any(session.id in r.getMessage() for r in caplog.records)


def test_corrupt_metadata_reads_as_empty(any_store: ConversationStore) -> None:
    session = any_store.create_session({"a": 1})
    any_store.client.hset(any_store.keys.meta(session.id), "metadata", b"\xff[")
    fetched = any_store.get_session(session.id)
    assert fetched is not None
    assert fetched.metadata == {}


def test_layout_version_is_written(any_store: ConversationStore) -> None:
    any_store.create_session()
    assert any_store.client.get(any_store.keys.layout()) == b"2"


def test_listing_skips_many_dead_entries_without_losing_live_ones(any_store: ConversationStore) -> None:
    live = [any_store.create_session(owner="dead").id for _ in range(3)]
    time.sleep(0.005)
    dead = [any_store.create_session(owner="dead").id for _ in range(25)]
    for session_id in dead:
        any_store.client.delete(*any_store.keys.session_keys(session_id))
    page = any_store.list_sessions_page(owner="dead", limit=2)
    assert len(page.sessions) == 2
    assert page.next_cursor is not None
    rest = any_store.list_sessions_page(owner="dead", limit=2, cursor=page.next_cursor)
    assert sorted(s.id for s in page.sessions + rest.sessions) == sorted(live)
    assert rest.next_cursor is None


# --------------------------------------------------------------------------------- listing (flat script)


def _listed_fields(summary: Any) -> tuple[Any, ...]:
    return (
        summary.id,
        summary.owner,
        summary.title,
        summary.metadata,
        summary.created_at,
        summary.updated_at,
        summary.expires_at,
        summary.message_count,
    )


def test_listing_many_sessions_sharing_one_score_walks_each_once(any_store: ConversationStore) -> None:
    """An import writes thousands of index entries within one millisecond: every page starts right
    after its cursor (not by re-reading every entry of that score), and none is shown twice."""
    from tests.factories import put_session

    pipe = any_store.client.pipeline(transaction=False)
    now = int(time.time() * 1000)
    ids = [
        put_session(pipe, any_store.keys, owner="bulk", created_at=now, updated_at=now) for _ in range(130)
    ]
    pipe.execute()
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = any_store.list_sessions_page(owner="bulk", limit=20, cursor=cursor)
        seen.extend(s.id for s in page.sessions)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 7
    assert seen == sorted(ids, reverse=True)  # equal scores: newest-first order falls back on the id
    assert [s.id for s in any_store.list_sessions(owner="bulk")] == seen


def test_listing_cursor_survives_its_session_being_deleted(any_store: ConversationStore) -> None:
    from tests.factories import put_session

    pipe = any_store.client.pipeline(transaction=False)
    now = int(time.time() * 1000)
    ids = sorted(
        (put_session(pipe, any_store.keys, owner="c", created_at=now, updated_at=now) for _ in range(9)),
        reverse=True,
    )
    pipe.execute()
    first = any_store.list_sessions_page(owner="c", limit=4)
    assert [s.id for s in first.sessions] == ids[:4]
    # The cursor names the page's last session: gone now, the next page still starts after it.
    assert any_store.delete_session(ids[3], owner="c")
    rest = any_store.list_sessions_page(owner="c", limit=10, cursor=first.next_cursor)
    assert [s.id for s in rest.sessions] == ids[4:]


def test_listed_summaries_equal_the_session_summaries_in_both_layouts(any_store: ConversationStore) -> None:
    from tests.factories import put_session

    s2 = any_store.create_session(owner="both", title="Zwei ✓", metadata={"k": [1, 2]})
    any_store.append_message(s2.id, role="user", content="hi", owner="both")
    pipe = any_store.client.pipeline(transaction=False)
    now = int(time.time() * 1000)
    s1 = put_session(
        pipe,
        any_store.keys,
        owner="both",
        created_at=now - 5000,
        updated_at=now - 4000,
        messages=3,
        layout_version=1,
    )
    pipe.execute()
    listed = {s.id: s for s in any_store.list_sessions(owner="both")}
    assert set(listed) == {s2.id, s1}
    assert _listed_fields(listed[s2.id]) == _listed_fields(any_store.get_session_summary(s2.id, owner="both"))
    legacy = listed[s1]
    assert (legacy.message_count, legacy.metadata, legacy.title) == (3, {}, "")
    assert legacy.created_at == datetime.fromtimestamp((now - 5000) / 1000, UTC)
    # Layout 1 stored no expires_at: it is reckoned from the TTL left (an hour here).
    assert legacy.expires_at is not None
    assert abs((legacy.expires_at - datetime.now(UTC)) - timedelta(hours=1)) < timedelta(seconds=30)
    # Listing reads, never migrates: the session is still of layout 1 afterwards.
    assert any_store.client.hget(any_store.keys.meta(s1), "v") is None


def test_listing_drops_half_evicted_sessions_of_either_layout(any_store: ConversationStore) -> None:
    from tests.factories import put_session

    keep = any_store.create_session(owner="ev")
    evicted = any_store.create_session(owner="ev")
    any_store.append_message(evicted.id, role="user", content="x", owner="ev")
    pipe = any_store.client.pipeline(transaction=False)
    now = int(time.time() * 1000)
    legacy = put_session(
        pipe, any_store.keys, owner="ev", created_at=now, updated_at=now, messages=2, layout_version=1
    )
    pipe.execute()
    # An evicting Redis dropped the message set / the layout-1 list but kept the meta hash.
    any_store.client.delete(any_store.keys.messages(evicted.id), any_store.keys.legacy_messages(legacy))
    assert [s.id for s in any_store.list_sessions(owner="ev")] == [keep.id]
    index = any_store.keys.owner_index("ev")
    assert any_store.client.zscore(index, evicted.id) is None
    assert any_store.client.zscore(index, legacy) is None


def test_a_page_of_20_takes_one_round_trip(store: ConversationStore, monkeypatch: Any) -> None:
    for _ in range(25):
        store.create_session(owner="rt")
    trips: list[int] = []
    real = store.sync._send

    def counted(commands: Any, **kwargs: Any) -> Any:
        trips.append(len(commands))
        return real(commands, **kwargs)

    monkeypatch.setattr(store.sync, "_send", counted)
    page = store.list_sessions_page(owner="rt", limit=20)
    assert len(page.sessions) == 20
    assert len(trips) == 1  # the index page and its summaries in one script (a single Redis)
    rest = store.list_sessions_page(owner="rt", limit=20, cursor=page.next_cursor)
    assert len(rest.sessions) == 5
    assert len(trips) == 2


def test_async_listing_equals_the_sync_one(store: ConversationStore) -> None:
    import asyncio

    from conversations.clients import get_async_redis_client

    for i in range(7):
        s = store.create_session(owner="par", title=f"t{i}")
        store.append_message(s.id, role="user", content="x", owner="par")
    astore = ConversationStore(store.client, store.config, async_client_factory=get_async_redis_client)

    async def walk() -> list[Any]:
        return await astore.alist_sessions(owner="par")

    assert [_listed_fields(s) for s in asyncio.run(walk())] == [
        _listed_fields(s) for s in store.list_sessions(owner="par")
    ]


def test_a_listed_summary_behaves_like_any_other(any_store: ConversationStore) -> None:
    """A listing builds its summaries by filling their slots directly: to a caller each is a summary
    like the one ``get_session_summary`` returns (equal, printable, copyable, picklable, frozen)."""
    import copy
    import dataclasses
    import pickle

    session = any_store.create_session(owner="like", title="Überblick", metadata={"k": [1, 2]})
    any_store.append_message(session.id, role="user", content="hi", owner="like")
    read = any_store.get_session_summary(session.id, owner="like")
    for pick in (
        lambda s: s,
        lambda s: pickle.loads(pickle.dumps(s)),
        copy.copy,
        copy.deepcopy,
        lambda s: dataclasses.replace(s, title="Überblick"),
    ):
        (listed,) = any_store.list_sessions(owner="like")
        assert pick(listed) == read
    (listed,) = any_store.list_sessions(owner="like")
    assert repr(listed) == repr(read)
    assert dataclasses.asdict(listed) == dataclasses.asdict(read)
    with pytest.raises(dataclasses.FrozenInstanceError):
        listed.title = "x"  # type: ignore[misc]
    (fresh,) = any_store.list_sessions(owner="like")
    with pytest.raises(AttributeError):
        fresh.no_such_field  # type: ignore[attr-defined]  # noqa: B018
    assert fresh == read
    (page,) = any_store.list_sessions_page(owner="like").sessions
    assert (page.expires_at, page.message_count, page.session_id) == (read.expires_at, 1, session.id)


@pytest.mark.parametrize(("chunk", "budget"), [(3, 1000), (500, 4)])
def test_the_full_listing_walks_chunks_and_prunes_what_is_gone(
    any_store: ConversationStore, monkeypatch: Any, chunk: int, budget: int
) -> None:
    """``list_sessions`` reads the index a few sessions per call (``chunk``), and a call stops early
    after ``budget`` entries: either way every live session is listed once, newest first, gone ones
    are pruned, and index entries that are not session ids are skipped and left alone."""
    from conversations.store import operations
    from conversations.store.codec import as_text
    from tests.factories import put_session

    monkeypatch.setattr(operations, "LIST_CHUNK", chunk)
    monkeypatch.setattr(operations, "LIST_BUDGET", budget)
    pipe = any_store.client.pipeline(transaction=False)
    now = int(time.time() * 1000)
    ids = [
        put_session(
            pipe, any_store.keys, owner="walk", created_at=now - i, updated_at=now - i, messages=i % 3
        )
        for i in range(20)
    ]
    pipe.execute()
    index = any_store.keys.owner_index("walk")
    gone = ids[4:13]
    for session_id in gone:
        any_store.client.delete(any_store.keys.meta(session_id))
    any_store.client.zadd(index, {"not-a-session-id": now - 5, "x" * 21 + "}": now - 6})
    listed = any_store.list_sessions(owner="walk")
    assert [s.id for s in listed] == [sid for sid in ids if sid not in gone]
    assert [s.message_count for s in listed] == [i % 3 for i, sid in enumerate(ids) if sid not in gone]
    left = {as_text(member) for member in any_store.client.zrange(index, 0, -1)}
    assert left == {sid for sid in ids if sid not in gone} | {"not-a-session-id", "x" * 21 + "}"}
    monkeypatch.setattr(operations, "LIST_BUDGET", 1000)
    page = any_store.list_sessions_page(owner="walk", limit=4)
    assert [s.id for s in page.sessions] == ids[:4]
    rest = any_store.list_sessions_page(owner="walk", limit=20, cursor=page.next_cursor)
    assert [s.id for s in rest.sessions] == ids[13:]
    assert rest.next_cursor is None

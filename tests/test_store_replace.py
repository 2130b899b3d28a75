"""``replace_messages`` (and ``areplace_messages``): a session's whole history swapped in one script,
on the real Redis. The framework adapters' "set the history" calls rest on it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

from conversations import signals
from conversations.exceptions import InvalidInput, SessionNotFound
from conversations.store import ConversationStore
from tests import factories

pytestmark = pytest.mark.redis


def texts(store: ConversationStore, session_id: str, owner: str | None = None) -> list[str]:
    return [m.content for m in store.get_messages(session_id, owner=owner, last=1000)]


def test_replace_swaps_the_history_and_ids_keep_growing(store: ConversationStore) -> None:
    session = store.create_session(owner="u")
    store.append_messages(session.id, [{"role": "user", "content": f"old {n}"} for n in range(3)], owner="u")

    new = store.replace_messages(
        session.id,
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi", "data": {"k": [1]}, "status": "incomplete", "token_count": 2},
        ],
        owner="u",
    )

    assert [m.id for m in new] == [4, 5]
    stored = store.get_messages(session.id, owner="u", last=10)
    assert stored == new
    assert (stored[1].data, stored[1].status, stored[1].token_count) == ({"k": [1]}, "incomplete", 2)
    assert store.count_messages(session.id, owner="u") == 2
    assert store.append_message(session.id, role="assistant", content="next", owner="u").id == 6


def test_replace_with_nothing_empties_the_session_which_stays(store: ConversationStore) -> None:
    session = store.create_session()
    store.append_message(session.id, role="user", content="gone soon")

    assert store.replace_messages(session.id, []) == []

    assert store.get_messages(session.id) == []
    assert store.get_session_summary(session.id).message_count == 0


def test_an_invalid_message_writes_nothing(store: ConversationStore) -> None:
    session = store.create_session()
    store.append_message(session.id, role="user", content="kept")

    with pytest.raises(InvalidInput) as caught:
        store.replace_messages(
            session.id, [{"role": "user", "content": "ok"}, {"role": "wizard", "content": "no"}]
        )

    assert caught.value.field == "messages[1].role"
    assert texts(store, session.id) == ["kept"]
    with pytest.raises(InvalidInput):
        store.replace_messages(session.id, {"role": "user", "content": "not a list"})  # type: ignore[arg-type]


def test_another_owner_cannot_replace(store: ConversationStore) -> None:
    session = store.create_session(owner="alice")
    store.append_message(session.id, role="user", content="mine", owner="alice")

    with pytest.raises(SessionNotFound):
        store.replace_messages(session.id, [{"role": "user", "content": "yours"}], owner="mallory")
    with pytest.raises(SessionNotFound):
        store.replace_messages("A" * 22, [])

    assert texts(store, session.id, "alice") == ["mine"]


def test_a_concurrent_reader_never_sees_a_half_replaced_history(store: ConversationStore) -> None:
    session = store.create_session()
    size = 40
    store.replace_messages(session.id, [{"role": "user", "content": "gen 0"}] * size)
    seen: list[list[str]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(texts(store, session.id))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 1.5
        generation = 0
        while time.monotonic() < deadline:
            generation += 1
            store.replace_messages(session.id, [{"role": "user", "content": f"gen {generation}"}] * size)
    finally:
        stop.set()
        reader.join()

    assert generation > 20
    assert len(seen) > 20
    generations = set()
    for history in seen:
        assert len(history) == size  # never empty, never part old and part new
        assert len(set(history)) == 1
        generations.add(history[0])
    assert len(generations) > 2  # the reader did read while the writer replaced


def test_replace_sends_the_events_and_signals_of_a_truncate_and_an_append(store: ConversationStore) -> None:
    session = store.create_session(owner="u")
    store.append_messages(
        session.id, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], owner="u"
    )
    removed: list[dict[str, Any]] = []
    appended: list[int] = []

    def on_removed(**kwargs: Any) -> None:
        removed.append(kwargs)

    def on_appended(message: Any, **kwargs: Any) -> None:
        appended.append(message.id)

    signals.messages_removed.connect(on_removed)
    signals.message_appended.connect(on_appended)
    try:
        store.replace_messages(session.id, [{"role": "assistant", "content": "c"}], owner="u")
    finally:
        signals.messages_removed.disconnect(on_removed)
        signals.message_appended.disconnect(on_appended)

    events, _ = store.events_since(session.id, "0-0", owner="u")
    kinds = [(e.kind, e.message_id) for e in events]
    assert kinds[-2:] == [("messages.truncated", 0), ("message.created", 3)]
    assert events[-2].payload == b"2"
    assert events[-1].message is not None
    assert events[-1].message.content == "c"
    assert [(r["session_id"], r["after"], r["owner"]) for r in removed] == [(session.id, 0, "u")]
    assert appended == [3]


def test_replace_migrates_a_layout_1_session_first(
    store: ConversationStore, redis_client: redis.Redis
) -> None:
    pipe = redis_client.pipeline()
    now = int(time.time() * 1000)
    sid = factories.put_session(
        pipe, store.keys, created_at=now, updated_at=now, messages=3, layout_version=1
    )
    pipe.execute()

    new = store.replace_messages(sid, [{"role": "user", "content": "fresh"}])

    assert [m.id for m in new] == [4]
    assert texts(store, sid) == ["fresh"]


def test_areplace_messages_is_the_async_twin(store: ConversationStore) -> None:
    session = store.create_session(owner="u")
    store.append_message(session.id, role="user", content="old", owner="u")

    async def go() -> list[Any]:
        await store.areplace_messages(session.id, [{"role": "user", "content": "x"}], owner="u")
        with pytest.raises(SessionNotFound):
            await store.areplace_messages(session.id, [], owner="other")
        return await store.aget_messages(session.id, owner="u", last=5)

    assert [(m.id, m.content) for m in asyncio.run(go())] == [(2, "x")]

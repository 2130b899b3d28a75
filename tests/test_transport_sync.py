"""The sync transport's own connections (kept beside django-redis's pool), against real Redis servers."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest
from django.core.cache import caches
from django_redis import get_redis_connection
from redis.backoff import NoBackoff
from redis.retry import Retry

from conversations.exceptions import SessionNotFound
from conversations.store import ConversationStore, get_store


@pytest.mark.parametrize("first", ["write", "read"])
def test_a_restarted_redis_serves_the_very_next_call(settings: Any, private_cache: Any, first: str) -> None:
    """A kept connection whose server went away serves the next call all the same, with no retry
    policy on the connections: a write finds it closed before sending (a write is never sent twice),
    a read is sent again on a new connection."""
    alias = settings.CONVERSATIONS["CACHE_ALIAS"]
    options = settings.CACHES[alias]["OPTIONS"]
    options["CONNECTION_POOL_KWARGS"] = {"retry": Retry(NoBackoff(), 0)}
    store = get_store()
    session = store.create_session(owner="user:1")
    store.append_message(session.id, role="user", content="before", owner="user:1")
    private_cache.restart()  # same port, empty
    if first == "read":
        with pytest.raises(SessionNotFound):  # the restart emptied it
            store.get_messages(session.id, owner="user:1")
    fresh = store.create_session(owner="user:1")
    assert store.append_message(fresh.id, role="user", content="after", owner="user:1").id == 1


def test_many_stores_on_one_pool_leave_the_pool_to_the_cache(settings: Any, key_prefix: str) -> None:
    """Stores for 150 configurations of one cache alias share their kept connections, which do not
    come out of django-redis's pool (capped at 100 by redis-py 6+): the cache keeps working."""
    sessions = []
    for n in range(150):
        settings.CONVERSATIONS = {**settings.CONVERSATIONS, "KEY_PREFIX": f"{key_prefix}:{n}"}
        store = get_store()
        session = store.create_session(owner="user:1")
        store.append_message(session.id, role="user", content=str(n), owner="user:1")
        sessions.append((store, session.id))
    cache = caches["default"]
    cache.set(f"{key_prefix}:probe", "still served", timeout=30)
    assert cache.get(f"{key_prefix}:probe") == "still served"
    assert get_redis_connection("default").ping()
    for n, (store, session_id) in enumerate(sessions):
        assert [m.content for m in store.get_messages(session_id, owner="user:1")] == [str(n)]
    caches["default"].delete(f"{key_prefix}:probe")


def _child_appends(store: ConversationStore, session_id: str, go: Any, done: Any) -> None:
    try:
        go.wait(30)
        done.put(_append_for(store, session_id, "child", seconds=0.5))
    except BaseException as exc:  # report it to the parent rather than dying silently
        done.put(repr(exc))


def _append_for(store: ConversationStore, session_id: str, name: str, *, seconds: float) -> list[int]:
    ids = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ids.append(store.append_message(session_id, role="user", content=name, owner="user:1").id)
    return ids


def test_a_forked_child_never_shares_the_parents_connection(store: ConversationStore) -> None:
    """A worker forked after the parent used the store (gunicorn's --preload) gets connections of its
    own: parent and child writing at the same time each read the replies to their own calls."""
    parent = store.create_session(owner="user:1")
    child = store.create_session(owner="user:1")
    # The child's ids start above 1000, so a reply read by the wrong process shows in its ids.
    store.append_messages(child.id, [{"role": "user", "content": "earlier"}] * 1000, owner="user:1")
    context = multiprocessing.get_context("fork")
    go, done = context.Event(), context.Queue()
    process = context.Process(target=_child_appends, args=(store, child.id, go, done))
    process.start()
    go.set()
    parent_ids = _append_for(store, parent.id, "parent", seconds=0.5)
    child_ids = done.get(timeout=60)
    process.join(30)
    assert process.exitcode == 0
    assert parent_ids == list(range(1, len(parent_ids) + 1))
    assert child_ids == list(range(1001, 1001 + len(child_ids)))
    assert store.count_messages(parent.id, owner="user:1") == len(parent_ids)
    assert store.count_messages(child.id, owner="user:1") == 1000 + len(child_ids)

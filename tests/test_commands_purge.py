"""``manage.py conversations_purge`` on the real Redis: each filter deletes exactly its sessions
through the store (signals fire, indexes follow), a dry run deletes nothing, and the confirmation
prompt guards the rest."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError

from conversations import signals
from conversations.operations.scanning import server_time_ms
from conversations.store import ConversationStore

from .factories import put_session

pytestmark = pytest.mark.redis

MINUTE = 60_000


def purge(*args: str, **options: Any) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("conversations_purge", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def sessions(store: ConversationStore, redis_client: redis.Redis) -> dict[str, list[str]]:
    """user:a has 3 sessions (one idle 2 h, one missing from its index), user:b 2 (one idle 2 h),
    plus 1 unowned session idle 30 min."""
    now = server_time_ms(redis_client)
    keys = store.keys
    pipe = redis_client.pipeline(transaction=False)
    made = {
        "a_fresh": [store.create_session(owner="user:a").id],
        "a_old": [put_session(pipe, keys, owner="user:a", created_at=now, updated_at=now - 120 * MINUTE)],
        "a_unindexed": [
            put_session(pipe, keys, owner="user:a", created_at=now, updated_at=now - MINUTE, indexed=False)
        ],
        "b_fresh": [store.create_session(owner="user:b").id],
        "b_old": [
            put_session(pipe, keys, owner="user:b", created_at=now, updated_at=now - 120 * MINUTE, messages=4)
        ],
        "unowned": [put_session(pipe, keys, created_at=now, updated_at=now - 30 * MINUTE, messages=1)],
    }
    pipe.execute()
    return made


def alive(store: ConversationStore, made: dict[str, list[str]]) -> set[str]:
    owners = {"a": "user:a", "b": "user:b", "u": None}
    return {
        name
        for name, ids in made.items()
        for sid in ids
        if store.get_session(sid, owner=owners[name[0]]) is not None
    }


@pytest.fixture
def deleted_signals() -> Iterator[list[str]]:
    heard: list[str] = []

    def receiver(sender: Any, session_id: str, **kwargs: Any) -> None:
        heard.append(session_id)

    signals.session_deleted.connect(receiver)
    yield heard
    signals.session_deleted.disconnect(receiver)


def test_purge_by_owner_deletes_that_owners_sessions_only(
    store: ConversationStore, sessions: dict[str, list[str]], deleted_signals: list[str]
) -> None:
    out, _ = purge(owner="user:a", interactive=False)
    assert "Sessions deleted: 3 (0 messages), owned by 'user:a'." in out
    assert alive(store, sessions) == {"b_fresh", "b_old", "unowned"}
    # Found by SCAN, so a session missing from its owner's index goes too; signals fire for each.
    assert sorted(deleted_signals) == sorted(
        sessions["a_fresh"] + sessions["a_old"] + sessions["a_unindexed"]
    )
    assert store.list_sessions(owner="user:a") == []
    assert store.client.exists(store.keys.owner_index("user:a")) == 0


def test_purge_by_idle_time(store: ConversationStore, sessions: dict[str, list[str]]) -> None:
    out, _ = purge(idle_longer_than="1h", interactive=False)
    assert "Sessions deleted: 2 (4 messages), idle longer than 1h 00m." in out
    assert alive(store, sessions) == {"a_fresh", "a_unindexed", "b_fresh", "unowned"}
    assert [s.id for s in store.list_sessions(owner="user:b")] == sessions["b_fresh"]
    purge(idle_longer_than="20m", interactive=False)
    assert alive(store, sessions) == {"a_fresh", "a_unindexed", "b_fresh"}


def test_purge_all(
    store: ConversationStore, sessions: dict[str, list[str]], deleted_signals: list[str]
) -> None:
    out, _ = purge(everything=True, interactive=False)
    assert "Sessions deleted: 6 (5 messages), all sessions." in out
    assert alive(store, sessions) == set()
    assert len(deleted_signals) == 6
    assert list(store.client.scan_iter(match=store.keys.meta_pattern())) == []


def test_dry_run_lists_and_deletes_nothing(store: ConversationStore, sessions: dict[str, list[str]]) -> None:
    out, _ = purge(everything=True, dry_run=True)
    assert "Sessions that would be deleted: 6 (5 messages), all sessions." in out
    for ids in sessions.values():
        assert ids[0] in out
    assert "owner=(unowned)" in out
    assert alive(store, sessions) == set(sessions)


def test_confirmation_no_cancels_and_yes_deletes(
    store: ConversationStore, sessions: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def answer(text: str) -> str:
        asked.append(text)
        return reply

    monkeypatch.setattr("builtins.input", answer)
    reply = "no"
    with pytest.raises(CommandError, match="cancelled"):
        purge(owner="user:b")
    assert "Sessions to delete: 2, owned by 'user:b'." in asked[0]
    assert alive(store, sessions) == set(sessions)

    reply = "yes"
    out, _ = purge(owner="user:b")
    assert "Sessions deleted: 2" in out
    assert alive(store, sessions) == {"a_fresh", "a_old", "a_unindexed", "unowned"}

    asked.clear()
    out, _ = purge(owner="user:b")  # nothing left: no question asked
    assert asked == []
    assert "No sessions to delete (owned by 'user:b')." in out


def test_corrupt_keys_are_skipped_and_reported(store: ConversationStore, redis_client: redis.Redis) -> None:
    redis_client.hset(store.keys.meta("x" * 22), mapping={"title": "no owner"})
    session = store.create_session(owner="user:c")
    out, err = purge(everything=True, interactive=False)
    assert "Sessions deleted: 1" in out
    assert "Unreadable session keys skipped: 1" in err
    assert store.get_session(session.id, owner="user:c") is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "one of the arguments --owner --idle-longer-than --all is required"),
        ({"owner": "user:a", "everything": True}, "not allowed with argument"),
        ({"owner": "user:a", "idle_longer_than": "1h"}, "not allowed with argument"),
        ({"idle_longer_than": "soon"}, "not a duration"),
        ({"owner": ""}, "owner"),
    ],
)
def test_bad_filters_are_command_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        purge(interactive=False, **options)


def test_unreachable_redis_is_a_command_error(settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "CACHE_ALIAS": "unreachable"}
    with pytest.raises(CommandError, match="Cannot reach Redis"):
        purge(everything=True, interactive=False)

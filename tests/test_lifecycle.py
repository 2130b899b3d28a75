"""The message lifecycle (issue #12): per-message status, data and token counts; update, extend, delete,
truncate, pop, batch append, the context window; ids that never shift or come back; layout-1 sessions
migrated on first touch. Everything runs on the real Redis (atomicity, TTLs and concurrency are the
point); tests/test_cluster.py runs the contract tests again on a Redis Cluster.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from conversations import signals
from conversations.exceptions import (
    ConversationError,
    IdempotencyConflict,
    InvalidInput,
    MessageNotFound,
    MessageNotInProgress,
    SessionFull,
    SessionNotFound,
)
from conversations.pagination import MessageCursor, read_message_page
from conversations.store import ConversationStore, Message, StoreConfig, codec, get_store, scripts
from conversations.store.keys import digest
from tests.factories import legacy_fingerprint, put_legacy_session

pytestmark = pytest.mark.redis

OWNER = "user:1"
TTL_MS = 1_800_000  # the default SESSION_TTL
LOWERED_MS = 60_000  # what the tests lower every key's TTL to before a write that must renew it


# ---------------------------------------------------------------- helpers


def ids(messages: list[Message]) -> list[int]:
    return [m.id for m in messages]


def everything(store: ConversationStore, sid: str, owner: str | None = OWNER) -> list[Message]:
    return store.get_messages(sid, owner=owner, limit=100_000)


def session_keys(store: ConversationStore, sid: str, owner: str = OWNER) -> list[str]:
    """Every key a session with an idempotent create and append has: meta, messages, idempotency hash,
    events, the owner index and the create's idempotency record."""
    return [
        *store.keys.session_keys(sid),
        store.keys.owner_index(owner),
        store.keys.owner_idempotency(owner, digest("create-1")),
    ]


def snapshot(store: ConversationStore, sid: str, owner: str = OWNER) -> dict[str, Any]:
    """Everything Redis holds for the session, to show a refused call changed nothing."""
    meta, messages, idem, events = store.keys.session_keys(sid)
    client = store.client
    return {
        "meta": client.hgetall(meta),
        "messages": client.zrange(messages, 0, -1, withscores=True),
        "idem": client.hgetall(idem),
        "events": client.xrange(events),
        "index": client.zscore(store.keys.owner_index(owner), sid),
        "legacy": client.lrange(store.keys.legacy_messages(sid), 0, -1),
    }


def conversation(store: ConversationStore) -> str:
    """A session of OWNER (created idempotently) with three messages appended idempotently, the third
    an in-progress reply: every key a session can have exists."""
    sid = store.create_session(owner=OWNER, idempotency_key="create-1").id
    store.append_messages(
        sid,
        [
            {"role": "user", "content": "one", "token_count": 1},
            {"role": "assistant", "content": "two", "token_count": 1},
            {"role": "assistant", "content": "", "status": "in_progress"},
        ],
        owner=OWNER,
        idempotency_key="append-1",
    )
    return sid


@pytest.fixture
def recorded() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every store signal sent during the test, as (name, kwargs)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    wanted = ("message_appended", "message_updated", "messages_removed", "session_created")
    handlers = {}
    for name in wanted:

        def handle(sender: Any, _name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            seen.append((_name, kwargs))

        handlers[name] = handle
        getattr(signals, name).connect(handle)
    yield seen
    for name, handle in handlers.items():
        getattr(signals, name).disconnect(handle)


def count_round_trips(store: ConversationStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names each script (and ``commands``) the store sends from now on."""
    sent: list[str] = []
    script, commands = store.sync.script, store.sync.commands

    def counting_script(s: scripts.LuaScript, *args: Any, **kwargs: Any) -> Any:
        sent.append(s.name)
        return script(s, *args, **kwargs)

    def counting_commands(step: Any) -> Any:
        sent.append("commands")
        return commands(step)

    monkeypatch.setattr(store.sync, "script", counting_script)
    monkeypatch.setattr(store.sync, "commands", counting_commands)
    return sent


# ---------------------------------------------------------------- 1. status, data, token_count


def test_a_message_keeps_status_data_and_token_count(store: ConversationStore) -> None:
    sid = store.create_session(owner=OWNER).id
    data = {"tool_calls": [{"id": "c1", "args": {"q": "é", "n": 2.5, "ok": True, "none": None}}], "": []}
    reply = store.append_message(
        sid, role="assistant", content="", owner=OWNER, status="in_progress", data=data, token_count=7
    )
    assert (reply.status, reply.data, reply.token_count, reply.content) == ("in_progress", data, 7, "")
    plain = store.append_message(sid, role="user", content="hi", owner=OWNER)
    assert (plain.status, plain.data, plain.token_count) == ("completed", {}, None)
    stopped = store.append_message(sid, role="assistant", content="Hal", owner=OWNER, status="incomplete")
    for read in (
        store.get_message(sid, reply.id, owner=OWNER),
        everything(store, sid)[0],
        store.get_session(sid, owner=OWNER).messages[0],  # type: ignore[union-attr]
        store.get_session_head(sid, owner=OWNER, last=3).messages[0],
    ):
        assert read == reply
    assert store.get_message(sid, plain.id, owner=OWNER) == plain
    assert store.get_message(sid, stopped.id, owner=OWNER).status == "incomplete"
    assert store.get_message(sid, 1, owner=OWNER).data == data  # verbatim, nested and all


def test_data_at_the_limit_is_kept_and_one_byte_more_is_refused(settings: Any, key_prefix: str) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGE_DATA_BYTES": 100}
    store = get_store()
    sid = store.create_session(owner=OWNER).id
    fits = {"k": "x" * (100 - len('{"k":""}'))}
    assert store.append_message(sid, role="user", content="a", owner=OWNER, data=fits).data == fits
    over = {"k": "x" * (101 - len('{"k":""}'))}
    before = snapshot(store, sid)
    calls: list[Callable[[], Any]] = [
        lambda: store.append_message(sid, role="user", content="b", owner=OWNER, data=over),
        lambda: store.update_message(sid, 1, owner=OWNER, data=over),
        lambda: store.append_messages(
            sid,
            [{"role": "user", "content": "c"}, {"role": "user", "content": "d", "data": over}],
            owner=OWNER,
        ),
    ]
    for call, field in zip(calls, ["data", "data", "messages[1].data"], strict=True):
        with pytest.raises(InvalidInput, match="101 bytes") as caught:
            call()
        assert caught.value.field == field
    assert snapshot(store, sid) == before


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"d": value}
    return value


BAD_INPUT: list[tuple[str, Callable[[ConversationStore, str], Any], str]] = [
    (
        "status",
        lambda s, sid: s.append_message(sid, role="user", content="x", owner=OWNER, status="done"),
        "status",
    ),
    (
        "data list",
        lambda s, sid: s.append_message(sid, role="user", content="x", owner=OWNER, data=[1]),
        "data",
    ),  # type: ignore[arg-type]
    (
        "data deep",
        lambda s, sid: s.append_message(sid, role="user", content="x", owner=OWNER, data=_deep(17)),
        "data",
    ),
    (
        "data set",
        lambda s, sid: s.append_message(sid, role="user", content="x", owner=OWNER, data={"a": {1}}),
        "data",
    ),
    (
        "tokens -1",
        lambda s, sid: s.append_message(sid, role="user", content="x", owner=OWNER, token_count=-1),
        "token_count",
    ),
    (
        "tokens bool",
        lambda s, sid: s.append_message(sid, role="user", content="x", owner=OWNER, token_count=True),
        "token_count",
    ),
    (
        "tokens float",
        lambda s, sid: s.append_message(sid, role="user", content="x", owner=OWNER, token_count=1.5),
        "token_count",
    ),  # type: ignore[arg-type]
    (
        "batch role",
        lambda s, sid: s.append_messages(
            sid, [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], owner=OWNER
        ),
        "messages[1].role",
    ),
    (
        "batch unknown",
        lambda s, sid: s.append_messages(sid, [{"role": "user", "content": "a", "colour": 1}], owner=OWNER),
        "messages[0].colour",
    ),
    (
        "batch one bad",
        lambda s, sid: s.append_messages(sid, [{"role": "user", "content": 5}], owner=OWNER),
        "messages[0].content",
    ),
    (
        "batch not dict",
        lambda s, sid: s.append_messages(sid, [{"role": "user", "content": "a"}, "hi"], owner=OWNER),
        "messages[1]",
    ),  # type: ignore[list-item]
    ("batch empty", lambda s, sid: s.append_messages(sid, [], owner=OWNER), "messages"),
    (
        "batch dict",
        lambda s, sid: s.append_messages(sid, {"role": "user", "content": "a"}, owner=OWNER),
        "messages",
    ),
    ("update status", lambda s, sid: s.update_message(sid, 3, owner=OWNER, status="finished"), "status"),
    ("update tokens", lambda s, sid: s.update_message(sid, 3, owner=OWNER, token_count=-2), "token_count"),
    ("update data", lambda s, sid: s.update_message(sid, 3, owner=OWNER, data="x"), "data"),  # type: ignore[arg-type]
    ("update content", lambda s, sid: s.update_message(sid, 3, owner=OWNER, content=5), "content"),  # type: ignore[arg-type]
    ("update id 0", lambda s, sid: s.update_message(sid, 0, owner=OWNER, content="x"), "message_id"),
    ("extend text", lambda s, sid: s.extend_message(sid, 3, 5, owner=OWNER), "text"),  # type: ignore[arg-type]
    ("extend id", lambda s, sid: s.extend_message(sid, "3", "x", owner=OWNER), "message_id"),  # type: ignore[arg-type]
    ("delete id", lambda s, sid: s.delete_message(sid, -1, owner=OWNER), "message_id"),
    ("delete id bool", lambda s, sid: s.delete_message(sid, True, owner=OWNER), "message_id"),
    ("truncate after", lambda s, sid: s.truncate_messages(sid, after=-1, owner=OWNER), "after"),
    ("truncate str", lambda s, sid: s.truncate_messages(sid, after="1", owner=OWNER), "after"),  # type: ignore[arg-type]
    ("context 0", lambda s, sid: s.get_context(sid, max_tokens=0, owner=OWNER), "max_tokens"),
    (
        "context system",
        lambda s, sid: s.get_context(sid, max_tokens=5, owner=OWNER, include_system="no"),
        "include_system",
    ),  # type: ignore[arg-type]
    ("get id", lambda s, sid: s.get_message(sid, 0, owner=OWNER), "message_id"),
]


@pytest.mark.parametrize(("case", "call", "field"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_names_the_field_and_writes_nothing(
    store: ConversationStore, case: str, call: Callable[[ConversationStore, str], Any], field: str
) -> None:
    sid = conversation(store)
    before = snapshot(store, sid)
    with pytest.raises(InvalidInput) as caught:
        call(store, sid)
    assert caught.value.field == field
    assert snapshot(store, sid) == before


# ---------------------------------------------------------------- 2. update and extend


def test_update_changes_only_what_it_is_given(store: ConversationStore) -> None:
    sid = conversation(store)
    first = store.get_message(sid, 1, owner=OWNER)
    updated = store.update_message(sid, 1, owner=OWNER, content="uno")
    assert updated == Message(1, "user", "uno", [], first.created_at, "completed", {}, 1)
    updated = store.update_message(sid, 1, owner=OWNER, data={"lang": "es"}, token_count=None)
    assert (updated.content, updated.data, updated.token_count) == ("uno", {"lang": "es"}, None)
    updated = store.update_message(sid, 1, owner=OWNER, status="incomplete", data=None)
    assert (updated.status, updated.data) == ("incomplete", {})
    assert store.get_message(sid, 1, owner=OWNER) == updated
    assert ids(everything(store, sid)) == [1, 2, 3]  # in place: no new id, no reordering
    assert store.count_messages(sid, owner=OWNER) == 3


def test_stream_a_reply_append_extend_complete(store: ConversationStore) -> None:
    sid = store.create_session(owner=OWNER).id
    store.append_message(sid, role="user", content="Tell me a joke", owner=OWNER)
    reply = store.append_message(sid, role="assistant", content="", owner=OWNER, status="in_progress")
    for delta in ["Why ", 'did the "chicken" ', "cross\n", "the road? 🐔", ""]:
        store.extend_message(sid, reply.id, delta, owner=OWNER)
    done = store.update_message(sid, reply.id, owner=OWNER, status="completed", token_count=9)
    assert done.content == 'Why did the "chicken" cross\nthe road? 🐔'
    assert store.get_message(sid, reply.id, owner=OWNER) == done
    with pytest.raises(MessageNotInProgress):
        store.extend_message(sid, reply.id, " more", owner=OWNER)
    with pytest.raises(MessageNotInProgress):
        store.extend_message(sid, 1, "x", owner=OWNER)  # completed from the start
    assert issubclass(MessageNotInProgress, ConversationError)
    assert store.get_message(sid, reply.id, owner=OWNER).content == done.content


def test_extend_refuses_to_pass_the_content_limit(settings: Any, key_prefix: str) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGE_LENGTH": 10}
    store = get_store()
    sid = store.create_session(owner=OWNER).id
    reply = store.append_message(sid, role="assistant", content="12345", owner=OWNER, status="in_progress")
    assert store.extend_message(sid, reply.id, "6789", owner=OWNER).content == "123456789"
    before = snapshot(store, sid)
    with pytest.raises(InvalidInput) as caught:
        store.extend_message(sid, reply.id, "abcdefgh", owner=OWNER)
    assert caught.value.field == "text"
    assert snapshot(store, sid) == before


@pytest.mark.parametrize("start", ['é\n"\\😀\x01', "\\u0041\\\\", "abcdef", "\t\\\x1f€ü"])
def test_extend_counts_the_limit_in_characters_as_append_does(
    settings: Any, key_prefix: str, start: str
) -> None:
    """Escapes (quotes, backslashes, control characters) and multi-byte characters count one each."""
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGE_LENGTH": 10}
    store = get_store()
    sid = store.create_session(owner=OWNER).id
    reply = store.append_message(sid, role="assistant", content=start, owner=OWNER, status="in_progress")
    fill = "\\é\n\x02x"[: 10 - len(start)]
    assert store.extend_message(sid, reply.id, fill, owner=OWNER).content == start + fill
    assert len(start + fill) == 10
    with pytest.raises(InvalidInput):
        store.extend_message(sid, reply.id, "y", owner=OWNER)
    with pytest.raises(InvalidInput):
        store.append_message(sid, role="assistant", content=start + fill + "y", owner=OWNER)
    assert store.get_message(sid, reply.id, owner=OWNER).content == start + fill


def test_eight_threads_extending_one_message_lose_nothing(store: ConversationStore) -> None:
    sid = store.create_session(owner=OWNER).id
    reply = store.append_message(sid, role="assistant", content="", owner=OWNER, status="in_progress")
    threads, per_thread = 8, 40
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def extend(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                store.extend_message(sid, reply.id, f"<{t}.{i}>", owner=OWNER)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=extend, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    content = store.get_message(sid, reply.id, owner=OWNER).content
    deltas = re.findall(r"<(\d+)\.(\d+)>", content)
    assert Counter(deltas) == Counter((str(t), str(i)) for t in range(threads) for i in range(per_thread))
    assert max(Counter(deltas).values()) == 1
    assert len(content) == sum(len(f"<{t}.{i}>") for t in range(threads) for i in range(per_thread))
    for t in range(threads):  # each writer's own deltas keep their order
        assert [int(i) for tt, i in deltas if tt == str(t)] == list(range(per_thread))
    assert ids(everything(store, sid)) == [reply.id]


def test_a_missing_message_is_message_not_found(store: ConversationStore) -> None:
    sid = conversation(store)
    store.delete_message(sid, 2, owner=OWNER)
    before = snapshot(store, sid)
    for missing in (2, 4, 10**6):
        with pytest.raises(MessageNotFound):
            store.get_message(sid, missing, owner=OWNER)
        with pytest.raises(MessageNotFound):
            store.update_message(sid, missing, owner=OWNER, content="x")
        with pytest.raises(MessageNotFound):
            store.extend_message(sid, missing, "x", owner=OWNER)
        assert store.delete_message(sid, missing, owner=OWNER) is False
    assert snapshot(store, sid) == before
    assert issubclass(MessageNotFound, ConversationError)


# ---------------------------------------------------------------- 3. and 4. removals; ids never shift


def test_delete_removes_exactly_that_one(store: ConversationStore) -> None:
    sid = conversation(store)
    assert store.delete_message(sid, 2, owner=OWNER) is True
    assert [(m.id, m.content) for m in everything(store, sid)] == [(1, "one"), (3, "")]
    assert store.count_messages(sid, owner=OWNER) == 2
    assert store.append_message(sid, role="user", content="four", owner=OWNER).id == 4


def test_truncate_removes_the_ids_above_after(store: ConversationStore) -> None:
    sid = conversation(store)
    store.append_message(sid, role="user", content="four", owner=OWNER)
    assert store.truncate_messages(sid, after=2, owner=OWNER) == 2
    assert ids(everything(store, sid)) == [1, 2]
    assert store.truncate_messages(sid, after=2, owner=OWNER) == 0
    assert store.truncate_messages(sid, after=10, owner=OWNER) == 0
    assert store.append_message(sid, role="user", content="five", owner=OWNER).id == 5
    assert store.truncate_messages(sid, after=0, owner=OWNER) == 3
    session = store.get_session(sid, owner=OWNER)
    assert session is not None
    assert session.messages == []
    assert session.message_count == 0
    assert [s.id for s in store.list_sessions(owner=OWNER)] == [sid]  # the session stays
    assert store.append_message(sid, role="user", content="six", owner=OWNER).id == 6


def test_pop_removes_and_returns_the_newest(store: ConversationStore) -> None:
    sid = conversation(store)
    newest = store.get_message(sid, 3, owner=OWNER)
    assert store.pop_message(sid, owner=OWNER) == newest
    assert ids(everything(store, sid)) == [1, 2]
    assert store.pop_message(sid, owner=OWNER).id == 2  # type: ignore[union-attr]
    assert store.pop_message(sid, owner=OWNER).id == 1  # type: ignore[union-attr]
    assert store.pop_message(sid, owner=OWNER) is None
    assert store.count_messages(sid, owner=OWNER) == 0
    assert store.append_message(sid, role="user", content="again", owner=OWNER).id == 4


def test_ids_are_never_reused_and_never_shift(store: ConversationStore) -> None:
    sid = store.create_session(owner=OWNER).id
    handed_out = [
        m.id
        for m in store.append_messages(
            sid, [{"role": "user", "content": f"m{i}"} for i in range(5)], owner=OWNER
        )
    ]
    kept = {1: "m0", 2: "m1", 3: "m2", 4: "m3"}
    store.delete_message(sid, 5, owner=OWNER)
    handed_out.append(store.append_message(sid, role="user", content="m6", owner=OWNER).id)
    store.pop_message(sid, owner=OWNER)
    handed_out.append(store.append_message(sid, role="user", content="m7", owner=OWNER).id)
    store.truncate_messages(sid, after=2, owner=OWNER)
    del kept[3], kept[4]
    handed_out.append(store.append_message(sid, role="user", content="m8", owner=OWNER).id)
    kept[handed_out[-1]] = "m8"
    assert handed_out == [1, 2, 3, 4, 5, 6, 7, 8]
    assert {m.id: m.content for m in everything(store, sid)} == kept
    store.truncate_messages(sid, after=0, owner=OWNER)
    assert store.append_message(sid, role="user", content="m9", owner=OWNER).id == 9
    batch = store.append_messages(
        sid, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], owner=OWNER
    )
    assert ids(batch) == [10, 11]


def test_pages_and_old_cursors_survive_removals(store: ConversationStore) -> None:
    sid = store.create_session(owner=OWNER).id
    store.append_messages(sid, [{"role": "user", "content": str(i)} for i in range(1, 11)], owner=OWNER)
    first = read_message_page(store, sid, owner=OWNER, limit=3, cursor=None)
    second = read_message_page(store, sid, owner=OWNER, limit=3, cursor=first.next)
    assert (ids(first.results), ids(second.results)) == ([1, 2, 3], [4, 5, 6])
    old_next, old_previous, later = first.next, second.previous, second.next
    assert old_next is not None
    assert old_previous is not None
    assert later is not None
    # Cursors travel as opaque strings: hand them out before the removals, use them after.
    tokens = [old_next.encode(), old_previous.encode(), later.encode()]
    for removed in (3, 7, 4):
        store.delete_message(sid, removed, owner=OWNER)
    store.truncate_messages(sid, after=9, owner=OWNER)
    remaining = [1, 2, 5, 6, 8, 9]
    assert store.count_messages(sid, owner=OWNER) == len(remaining)
    for after in range(12):
        assert ids(store.get_messages(sid, owner=OWNER, after=after)) == [i for i in remaining if i > after]
        assert (
            ids(store.get_messages(sid, owner=OWNER, before=after, limit=2))
            == [i for i in remaining if i < after][-2:]
        )
    page = read_message_page(store, sid, owner=OWNER, limit=3, cursor=MessageCursor.decode(tokens[0]))
    assert ids(page.results) == [5, 6, 8]
    assert page.next is not None
    assert ids(read_message_page(store, sid, owner=OWNER, limit=3, cursor=page.next).results) == [9]
    back = read_message_page(store, sid, owner=OWNER, limit=3, cursor=MessageCursor.decode(tokens[1]))
    assert ids(back.results) == [1, 2]
    assert ids(
        read_message_page(store, sid, owner=OWNER, limit=3, cursor=MessageCursor.decode(tokens[2])).results
    ) == [8, 9]
    # Walking every page from the start still sees each message once.
    seen: list[int] = []
    cursor = None
    while True:
        page = read_message_page(store, sid, owner=OWNER, limit=2, cursor=cursor)
        seen += ids(page.results)
        if page.next is None:
            break
        cursor = page.next
    assert seen == remaining


REMOVALS: list[tuple[str, Callable[[ConversationStore, str, int], Any]]] = [
    ("delete", lambda s, sid, mid: s.delete_message(sid, mid, owner=OWNER)),
    ("truncate", lambda s, sid, mid: s.truncate_messages(sid, after=mid - 1, owner=OWNER)),
    ("pop", lambda s, sid, mid: s.pop_message(sid, owner=OWNER)),
]


@pytest.mark.parametrize(("how", "remove"), REMOVALS, ids=[r[0] for r in REMOVALS])
def test_an_idempotent_retry_after_its_message_was_removed_appends_nothing(
    store: ConversationStore, how: str, remove: Callable[[ConversationStore, str, int], Any]
) -> None:
    sid = store.create_session(owner=OWNER).id
    store.append_message(sid, role="user", content="before", owner=OWNER)
    first = store.append_message(sid, role="user", content="retry me", owner=OWNER, idempotency_key="k")
    assert (
        store.append_message(sid, role="user", content="retry me", owner=OWNER, idempotency_key="k") == first
    )
    remove(store, sid, first.id)
    before = snapshot(store, sid)
    with pytest.raises(IdempotencyConflict, match="removed"):
        store.append_message(sid, role="user", content="retry me", owner=OWNER, idempotency_key="k")
    after = snapshot(store, sid)
    assert after["messages"] == before["messages"]
    assert after["meta"][b"count"] == before["meta"][b"count"]
    assert ids(everything(store, sid)) == [1]
    assert store.append_message(sid, role="user", content="new", owner=OWNER, idempotency_key="k2").id == 3


def test_an_idempotent_batch_retry_after_one_of_its_messages_was_removed(store: ConversationStore) -> None:
    sid = store.create_session(owner=OWNER).id
    batch = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    first = store.append_messages(sid, batch, owner=OWNER, idempotency_key="b")
    assert store.append_messages(sid, batch, owner=OWNER, idempotency_key="b") == first
    store.delete_message(sid, 2, owner=OWNER)
    with pytest.raises(IdempotencyConflict):
        store.append_messages(sid, batch, owner=OWNER, idempotency_key="b")
    assert ids(everything(store, sid)) == [1]


def test_appends_racing_removals_keep_ids_unique_increasing_and_counted(
    store: ConversationStore, redis_url: str
) -> None:
    sid = store.create_session(owner=OWNER).id
    # The remover is another client: its own connection pool, as another process would have.
    other_client = redis.Redis.from_url(redis_url, socket_timeout=10)
    remover = ConversationStore(other_client, StoreConfig(key_prefix=store.config.key_prefix))
    writers, per_writer = 3, 60
    appended: dict[int, list[int]] = {w: [] for w in range(writers)}
    errors: list[str] = []
    done = threading.Event()

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                appended[w].append(store.append_message(sid, role="user", content=f"{w}:{i}", owner=OWNER).id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    def remove() -> None:
        n = 0
        while not done.is_set():
            n += 1
            try:
                newest = remover.get_messages(sid, owner=OWNER, last=3)
                if n % 3 == 0 and newest:
                    remover.delete_message(sid, newest[0].id, owner=OWNER)
                elif n % 3 == 1 and len(newest) > 1:
                    remover.truncate_messages(sid, after=newest[-2].id, owner=OWNER)
                else:
                    remover.pop_message(sid, owner=OWNER)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(repr(exc))
            time.sleep(0.002)

    def check() -> None:
        while not done.is_set():
            session = store.get_session(sid, owner=OWNER)
            if session is None:
                errors.append("the session vanished")
                return
            got = ids(session.messages)
            if session.message_count != len(got):
                errors.append(f"count {session.message_count} but {len(got)} readable")
            if got != sorted(set(got)):
                errors.append(f"ids not strictly increasing: {got}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    side = [threading.Thread(target=remove), threading.Thread(target=check)]
    for t in side + threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    for t in side:
        t.join()
    other_client.close()
    assert errors == []
    every_id = [i for w in range(writers) for i in appended[w]]
    assert len(every_id) == len(set(every_id)) == writers * per_writer, "an id was handed out twice"
    for w in range(writers):
        assert appended[w] == sorted(appended[w]), "a writer saw its ids go down"
    assert max(every_id) == writers * per_writer  # no id skipped or reused: removals never give one back
    left = everything(store, sid)
    assert store.count_messages(sid, owner=OWNER) == len(left)
    assert set(ids(left)) <= set(every_id)
    assert store.append_message(sid, role="user", content="last", owner=OWNER).id == writers * per_writer + 1


# ---------------------------------------------------------------- 5. append_messages


def test_append_messages_is_one_round_trip_with_consecutive_ids(
    store: ConversationStore, monkeypatch: pytest.MonkeyPatch, recorded: list[tuple[str, dict[str, Any]]]
) -> None:
    sid = store.create_session(owner=OWNER).id
    store.append_message(sid, role="system", content="Be brief.", owner=OWNER)
    sent = count_round_trips(store, monkeypatch)
    batch = store.append_messages(
        sid,
        [
            {"role": "user", "content": "q", "token_count": 2},
            {"role": "assistant", "content": "", "status": "in_progress", "data": {"run": 1}},
            {"role": "tool", "content": "42", "sources": [{"url": "u"}]},
        ],
        owner=OWNER,
    )
    assert sent == ["append"] + (["commands"] if store.is_cluster else [])  # (+ the index, on a cluster)
    assert ids(batch) == [2, 3, 4]
    assert everything(store, sid)[1:] == batch
    assert batch[1].status == "in_progress"
    assert batch[1].data == {"run": 1}
    assert batch[2].sources == [{"url": "u"}]
    assert [(name, kw["message"].id) for name, kw in recorded if name == "message_appended"] == [
        ("message_appended", 1),
        ("message_appended", 2),
        ("message_appended", 3),
        ("message_appended", 4),
    ]


def test_append_messages_all_or_nothing(settings: Any, key_prefix: str) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGES": 4}
    store = get_store()
    sid = store.create_session(owner=OWNER).id
    store.append_messages(
        sid, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], owner=OWNER
    )
    before = snapshot(store, sid)
    with pytest.raises(SessionFull):
        store.append_messages(sid, [{"role": "user", "content": str(i)} for i in range(3)], owner=OWNER)
    assert snapshot(store, sid) == before
    store.append_messages(
        sid, [{"role": "user", "content": "c"}, {"role": "user", "content": "d"}], owner=OWNER
    )
    assert ids(everything(store, sid)) == [1, 2, 3, 4]


# ---------------------------------------------------------------- 6. the context window


def context_session(
    store: ConversationStore, specs: list[tuple[str, int | None]] | list[tuple[str, int | None, str]]
) -> str:
    sid = store.create_session(owner=OWNER).id
    store.append_messages(
        sid,
        [
            {
                "role": spec[0],
                "content": spec[2] if len(spec) > 2 else f"{spec[0]}-{n}",
                "token_count": spec[1],
            }  # type: ignore[misc]
            for n, spec in enumerate(specs, 1)
        ],
        owner=OWNER,
    )
    return sid


def window(store: ConversationStore, sid: str, max_tokens: int, **kwargs: Any) -> list[int]:
    return ids(store.get_context(sid, max_tokens=max_tokens, owner=OWNER, **kwargs))


def test_context_is_leading_system_messages_then_the_newest_that_fit(store: ConversationStore) -> None:
    #                             1            2             3                4            5
    sid = context_session(
        store, [("system", 10), ("user", 5), ("assistant", 5), ("tool", 3), ("assistant", 4)]
    )
    assert window(store, sid, 100) == [1, 2, 3, 4, 5]
    assert window(store, sid, 22) == [1, 3, 4, 5]  # 10 system + 4 + 3 + 5; the user's 5 do not fit
    # 10 + 4 leaves 3, which the tool message would fit, but a window never opens on a tool message.
    assert window(store, sid, 17) == [1, 5]
    assert window(store, sid, 14) == [1, 5]
    assert window(store, sid, 13) == [1]  # the newest does not fit: nothing older is taken instead
    assert window(store, sid, 5) == [1]  # the system messages are always given
    assert window(store, sid, 17, include_system=False) == [2, 3, 4, 5]
    assert window(store, sid, 7, include_system=False) == [5]
    assert window(store, sid, 3, include_system=False) == []
    messages = store.get_context(sid, max_tokens=22, owner=OWNER)
    assert messages == [store.get_message(sid, i, owner=OWNER) for i in (1, 3, 4, 5)]


def test_context_takes_every_leading_system_message_but_only_those(store: ConversationStore) -> None:
    sid = context_session(
        store, [("system", 2), ("system", 2), ("user", 3), ("system", 3), ("assistant", 3), ("tool", 1)]
    )
    assert window(store, sid, 9) == [1, 2, 5, 6]
    assert window(store, sid, 12) == [1, 2, 4, 5, 6]  # a later system message is an ordinary one
    assert window(store, sid, 15) == [1, 2, 3, 4, 5, 6]
    only_tools = context_session(store, [("system", 1), ("tool", 1), ("tool", 1)])
    assert window(store, only_tools, 100) == [1]


def test_context_of_a_session_without_system_messages(store: ConversationStore) -> None:
    sid = context_session(store, [("user", 3), ("assistant", 3), ("user", 3)])
    assert window(store, sid, 6) == [2, 3]
    assert window(store, sid, 6, include_system=False) == [2, 3]
    assert window(store, sid, 2) == []
    empty = store.create_session(owner=OWNER).id
    assert window(store, empty, 100) == []


def test_context_estimates_messages_without_a_token_count(store: ConversationStore) -> None:
    # One token per 4 bytes of stored (UTF-8, JSON-escaped) content, at least one.
    sid = context_session(
        store,
        [
            ("user", None, "x" * 40),  # 10
            ("assistant", None, "é" * 10),  # 20 bytes: 5
            ("user", None, ""),  # at least 1
            ("assistant", None, 'a\nb"c'),  # a\nb\"c is 7 bytes escaped: 2
        ],
    )
    assert window(store, sid, 3) == [3, 4]
    assert window(store, sid, 7) == [3, 4]
    assert window(store, sid, 8) == [2, 3, 4]
    assert window(store, sid, 17) == [2, 3, 4]
    assert window(store, sid, 18) == [1, 2, 3, 4]
    assert store.get_context.__doc__ is not None
    assert "4 bytes" in store.get_context.__doc__


def test_context_is_one_round_trip(store: ConversationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = context_session(store, [("system", 1), ("user", 1), ("assistant", 1)])
    sent = count_round_trips(store, monkeypatch)
    assert window(store, sid, 10) == [1, 2, 3]
    assert sent == ["context"]


def test_context_of_5000_messages_reads_only_what_it_returns(private_redis: Any) -> None:
    """MONITOR lists the commands a script runs: the window must read about what it returns, not the
    session's 5,000 messages."""
    client = redis.Redis.from_url(private_redis.url, socket_timeout=10)
    store = ConversationStore(client, StoreConfig(key_prefix="ctx"))
    sid = store.create_session(owner=OWNER).id
    store.append_message(sid, role="system", content="You are terse.", owner=OWNER, token_count=5)
    for start in range(0, 5000, 500):
        store.append_messages(
            sid,
            [{"role": "user", "content": f"m{start + i}", "token_count": 2} for i in range(500)],
            owner=OWNER,
        )
    commands: list[str] = []
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as monitor:
            ready.set()
            for entry in monitor.listen():
                if entry["command"] == "ECHO stop":
                    return
                commands.append(entry["command"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    ready.wait(5)
    time.sleep(0.1)
    picked = store.get_context(sid, max_tokens=105, owner=OWNER)
    redis.Redis.from_url(private_redis.url).echo("stop")
    watcher.join(10)
    client.close()
    assert ids(picked) == [1, *range(4952, 5002)]  # the system message, then the newest 50
    ranges = [c.split() for c in commands if c.startswith("ZRANGE ")]
    assert ranges, commands
    read = sum(int(hi) - int(lo) + 1 for _, _, lo, hi, *rest in ranges if not rest)
    assert not any(rest for *_, rest in [(r, r[4:]) for r in ranges])  # by rank only
    assert read <= len(picked) + 64, f"read {read} messages to return {len(picked)}"


# ---------------------------------------------------------------- 7. the write contract of each op

OPS: list[tuple[str, Callable[[ConversationStore, str, str | None], Any]]] = [
    ("update_message", lambda s, sid, o: s.update_message(sid, 2, owner=o, content="deux", token_count=2)),
    ("extend_message", lambda s, sid, o: s.extend_message(sid, 3, "more", owner=o)),
    ("delete_message", lambda s, sid, o: s.delete_message(sid, 2, owner=o)),
    ("truncate_messages", lambda s, sid, o: s.truncate_messages(sid, after=1, owner=o)),
    ("pop_message", lambda s, sid, o: s.pop_message(sid, owner=o)),
    (
        "append_messages",
        lambda s, sid, o: s.append_messages(
            sid, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], owner=o
        ),
    ),
]
OP_IDS = [name for name, _ in OPS]

# What each op leaves (message ids), and the signals and events it sends.
AFTER = {
    "update_message": [1, 2, 3],
    "extend_message": [1, 2, 3],
    "delete_message": [1, 3],
    "truncate_messages": [1],
    "pop_message": [1, 2],
    "append_messages": [1, 2, 3, 4, 5],
}
SIGNALS = {
    "update_message": [("message_updated", {"message": 2})],
    "extend_message": [("message_updated", {"message": 3})],
    "delete_message": [("messages_removed", {"message_ids": [2], "after": None})],
    "truncate_messages": [("messages_removed", {"message_ids": [], "after": 1})],
    "pop_message": [("messages_removed", {"message_ids": [3], "after": None})],
    "append_messages": [("message_appended", {"message": 4}), ("message_appended", {"message": 5})],
}
SCRIPT = {
    "update_message": "update_message",
    "extend_message": "extend_message",
    "delete_message": "delete_message",
    "truncate_messages": "truncate",
    "pop_message": "pop",
    "append_messages": "append",
}
EVENTS = {
    "update_message": [("message.updated", 2)],
    "extend_message": [("message.extended", 3)],
    "delete_message": [("message.removed", 2)],
    "truncate_messages": [("messages.truncated", 1)],
    "pop_message": [("message.removed", 3)],
    "append_messages": [("message.created", 4), ("message.created", 5)],
}


def lower_ttls(store: ConversationStore, sid: str) -> None:
    """Lower every key's TTL and age the index entry, so that renewals show."""
    for key in session_keys(store, sid):
        assert store.client.pexpire(key, LOWERED_MS), f"{key} should exist"
    store.client.zadd(store.keys.owner_index(OWNER), {sid: 1})


@pytest.mark.parametrize(("name", "op"), OPS, ids=OP_IDS)
def test_each_op_renews_every_key_bumps_the_index_and_signals_once(
    store: ConversationStore,
    name: str,
    op: Callable[[ConversationStore, str, str | None], Any],
    recorded: list[tuple[str, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sid = conversation(store)
    lower_ttls(store, sid)
    recorded.clear()
    last_event = store.client.xrevrange(store.keys.events(sid), count=1)[0][0].decode()
    started_ms = int(time.time() * 1000)
    sent = count_round_trips(store, monkeypatch)
    op(store, sid, OWNER)
    assert sent == [SCRIPT[name]] + (["commands"] if store.is_cluster else [])  # one script (+ the index)
    assert ids(everything(store, sid)) == AFTER[name]
    for key in session_keys(store, sid):
        if key == store.keys.messages(sid) and not AFTER[name]:
            continue
        ttl = store.client.pttl(key)
        assert TTL_MS - 10_000 < ttl <= TTL_MS + 10_000, f"{key}: {ttl}"  # renewed (cluster index: +10 s)
    score = store.client.zscore(store.keys.owner_index(OWNER), sid)
    assert score is not None
    assert score >= started_ms - 5_000
    summary = store.get_session_summary(sid, owner=OWNER)
    assert summary.updated_at.timestamp() * 1000 >= started_ms - 5_000
    assert summary.message_count == len(AFTER[name])
    got = [(signal, kwargs) for signal, kwargs in recorded]
    assert [s for s, _ in got] == [s for s, _ in SIGNALS[name]]
    for (signal, kwargs), (_, want) in zip(got, SIGNALS[name], strict=True):
        assert kwargs["session_id"] == sid
        assert kwargs["owner"] == OWNER
        for field, value in want.items():
            actual = kwargs[field].id if field == "message" else kwargs[field]
            assert actual == value, (signal, field)
    events, complete = store.events_since(sid, last_event, owner=OWNER)
    assert complete
    assert [(e.kind, e.message_id) for e in events] == EVENTS[name]
    if name == "extend_message":
        assert events[0].delta == "more"
    if name == "truncate_messages":
        assert events[0].payload == b"2"
    if name == "update_message":
        assert events[0].message == store.get_message(sid, 2, owner=OWNER)


@pytest.mark.parametrize("stranger", ["user:2", None])
@pytest.mark.parametrize(("name", "op"), OPS, ids=OP_IDS)
def test_another_owner_gets_session_not_found_and_changes_nothing(
    store: ConversationStore,
    name: str,
    op: Callable[[ConversationStore, str, str | None], Any],
    stranger: str | None,
    recorded: list[tuple[str, dict[str, Any]]],
) -> None:
    sid = conversation(store)
    lower_ttls(store, sid)
    before = snapshot(store, sid)
    recorded.clear()
    with pytest.raises(SessionNotFound):
        op(store, sid, stranger)
    assert snapshot(store, sid) == before
    assert all(0 < store.client.pttl(key) <= LOWERED_MS for key in session_keys(store, sid))
    assert recorded == []


def test_another_owners_reads_are_session_not_found(store: ConversationStore) -> None:
    sid = conversation(store)
    for stranger in ("user:2", None):
        with pytest.raises(SessionNotFound):
            store.get_message(sid, 1, owner=stranger)
        with pytest.raises(SessionNotFound):
            store.get_context(sid, max_tokens=10, owner=stranger)
    unknown = "A" * 22
    for call in (
        lambda: store.update_message(unknown, 1, owner=OWNER, content="x"),
        lambda: store.extend_message(unknown, 1, "x", owner=OWNER),
        lambda: store.delete_message(unknown, 1, owner=OWNER),
        lambda: store.truncate_messages(unknown, after=0, owner=OWNER),
        lambda: store.pop_message(unknown, owner=OWNER),
        lambda: store.get_context(unknown, max_tokens=3, owner=OWNER),
        lambda: store.get_message("not an id", 1, owner=OWNER),
    ):
        with pytest.raises(SessionNotFound):
            call()


def test_changes_are_published_on_the_session_channel(store: ConversationStore) -> None:
    sid = conversation(store)
    pubsub = store.client.pubsub()
    pubsub.subscribe(store.events_channel(sid))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    store.extend_message(sid, 3, "hé", owner=OWNER)
    store.update_message(sid, 3, owner=OWNER, status="completed")
    store.truncate_messages(sid, after=2, owner=OWNER)
    store.delete_message(sid, 1, owner=OWNER)
    store.pop_message(sid, owner=OWNER)
    got = []
    for _ in range(5):
        raw = pubsub.get_message(timeout=2)
        assert raw is not None
        event = codec.decode_published(raw["data"])
        assert event is not None
        got.append(event)
    pubsub.close()
    assert [(e.kind, e.message_id) for e in got] == [
        ("message.extended", 3),
        ("message.updated", 3),
        ("messages.truncated", 2),
        ("message.removed", 1),
        ("message.removed", 2),
    ]
    assert got[0].delta == "hé"
    assert got[1].message is not None
    assert got[1].message.status == "completed"
    # The stream holds the same events, with the same ids.
    events, _ = store.events_since(sid, "0-0", owner=OWNER)
    assert [e.id for e in events][-5:] == [e.id for e in got]


# ---------------------------------------------------------------- layout 1


def legacy(store: ConversationStore, owner: str = OWNER, **kwargs: Any) -> str:
    return put_legacy_session(store.client, store.keys, owner=owner, **kwargs)


def is_migrated(store: ConversationStore, sid: str) -> bool:
    return store.client.hget(store.keys.meta(sid), "v") == b"2"


def test_a_layout_1_session_reads_with_the_defaults(store: ConversationStore) -> None:
    sid = legacy(store, messages=3)
    session = store.get_session(sid, owner=OWNER)
    assert session is not None
    assert [(m.id, m.role, m.content, m.sources) for m in session.messages] == [
        (i, "user", f"m{i}", []) for i in (1, 2, 3)
    ]
    assert all((m.status, m.data, m.token_count) == ("completed", {}, None) for m in session.messages)
    assert is_migrated(store, sid)
    assert store.client.exists(store.keys.legacy_messages(sid)) == 0
    assert 0 < store.client.pttl(store.keys.messages(sid)) <= 3_600_000


LEGACY_FIRST_TOUCH: list[tuple[str, Callable[[ConversationStore, str], Any], list[int]]] = [
    ("get_messages", lambda s, sid: s.get_messages(sid, owner=OWNER, after=1), [1, 2, 3]),
    ("get_message", lambda s, sid: s.get_message(sid, 2, owner=OWNER), [1, 2, 3]),
    ("head", lambda s, sid: s.get_session_head(sid, owner=OWNER, last=2), [1, 2, 3]),
    ("count", lambda s, sid: s.count_messages(sid, owner=OWNER), [1, 2, 3]),
    ("append", lambda s, sid: s.append_message(sid, role="user", content="m4", owner=OWNER), [1, 2, 3, 4]),
    (
        "append_messages",
        lambda s, sid: s.append_messages(sid, [{"role": "user", "content": "m4"}], owner=OWNER),
        [1, 2, 3, 4],
    ),
    ("update", lambda s, sid: s.update_message(sid, 2, owner=OWNER, status="in_progress"), [1, 2, 3]),
    ("delete", lambda s, sid: s.delete_message(sid, 2, owner=OWNER), [1, 3]),
    ("truncate", lambda s, sid: s.truncate_messages(sid, after=1, owner=OWNER), [1]),
    ("pop", lambda s, sid: s.pop_message(sid, owner=OWNER), [1, 2]),
    ("context", lambda s, sid: s.get_context(sid, max_tokens=1, owner=OWNER), [1, 2, 3]),
    ("update_session", lambda s, sid: s.update_session(sid, owner=OWNER, title="t"), [1, 2, 3]),
]


@pytest.mark.parametrize(("name", "op", "left"), LEGACY_FIRST_TOUCH, ids=[c[0] for c in LEGACY_FIRST_TOUCH])
def test_every_call_migrates_a_layout_1_session_on_first_touch(
    store: ConversationStore, name: str, op: Callable[[ConversationStore, str], Any], left: list[int]
) -> None:
    sid = legacy(store, messages=3)
    result = op(store, sid)
    assert is_migrated(store, sid)
    messages = everything(store, sid)
    assert ids(messages) == left
    assert store.count_messages(sid, owner=OWNER) == len(left)
    assert [m.content for m in messages[: min(len(left), 1)]] == ["m1"]
    if name == "get_message":
        assert result.content == "m2"
        assert result.status == "completed"
    if name == "pop":
        assert result.id == 3
        assert result.content == "m3"
    if name == "context":
        assert ids(result) == [3]  # "m3" is 4 bytes with its quotes: estimated at one token
    if name == "update":
        assert store.extend_message(sid, 2, "+", owner=OWNER).content == "m2+"
    # Then the rest of the lifecycle works on it, and ids keep counting from layout 1's.
    assert store.append_message(sid, role="user", content="next", owner=OWNER).id == (5 if 4 in left else 4)
    assert [s.id for s in store.list_sessions(owner=OWNER)] == [sid]
    assert store.list_sessions(owner=OWNER)[0].message_count == len(left) + 1


def test_a_layout_1_session_lists_with_its_count_before_migration(store: ConversationStore) -> None:
    sid = legacy(store, messages=4)
    listed = store.list_sessions(owner=OWNER)
    assert [(s.id, s.message_count) for s in listed] == [(sid, 4)]


def test_a_layout_1_session_expiring_before_its_migration_is_not_found(
    store: ConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = legacy(store, messages=2)
    script = store.sync.script

    def expire_first(s: scripts.LuaScript, *args: Any, **kwargs: Any) -> Any:
        if s is scripts.MIGRATE:  # the session expires between the first script and the migration
            store.client.delete(store.keys.meta(sid), store.keys.legacy_messages(sid))
        return script(s, *args, **kwargs)

    monkeypatch.setattr(store.sync, "script", expire_first)
    assert store.get_session(sid, owner=OWNER) is None
    with pytest.raises(SessionNotFound):
        store.append_message(sid, role="user", content="late", owner=OWNER)
    with pytest.raises(SessionNotFound):
        store.get_messages(sid, owner=OWNER)
    assert store.client.exists(*store.keys.session_keys(sid)) == 0  # nothing recreated


def test_a_half_expired_layout_1_session_is_not_found(store: ConversationStore) -> None:
    sid = legacy(store, messages=2)
    store.client.delete(store.keys.legacy_messages(sid))  # its message list expired, its meta not yet
    assert store.get_session(sid, owner=OWNER) is None
    with pytest.raises(SessionNotFound):
        store.pop_message(sid, owner=OWNER)
    assert not is_migrated(store, sid)


@pytest.mark.parametrize(("name", "op", "left"), LEGACY_FIRST_TOUCH, ids=[c[0] for c in LEGACY_FIRST_TOUCH])
def test_another_owners_layout_1_session_is_not_migrated(
    store: ConversationStore, name: str, op: Callable[[ConversationStore, str], Any], left: list[int]
) -> None:
    sid = legacy(store, owner="user:2", messages=3)
    before = snapshot(store, sid, owner="user:2")
    with pytest.raises(SessionNotFound):
        op(store, sid)
    assert snapshot(store, sid, owner="user:2") == before
    assert not is_migrated(store, sid)
    assert store.client.llen(store.keys.legacy_messages(sid)) == 3


def test_an_idempotent_retry_spanning_the_migration_replays(store: ConversationStore) -> None:
    """A client retrying an append that layout 1 recorded gets that message back, not a conflict."""
    sid = legacy(store, messages=2, idempotency={"k": (legacy_fingerprint("user", "m2"), 2)})
    replayed = store.append_message(sid, role="user", content="m2", owner=OWNER, idempotency_key="k")
    assert (replayed.id, replayed.content) == (2, "m2")
    assert ids(everything(store, sid)) == [1, 2]
    with pytest.raises(IdempotencyConflict):
        store.append_message(sid, role="user", content="other", owner=OWNER, idempotency_key="k")
    store.delete_message(sid, 2, owner=OWNER)
    with pytest.raises(IdempotencyConflict, match="removed"):
        store.append_message(sid, role="user", content="m2", owner=OWNER, idempotency_key="k")


# ---------------------------------------------------------------- async twins


def test_the_async_twins_do_the_same(
    store: ConversationStore, recorded: list[tuple[str, dict[str, Any]]]
) -> None:
    import asyncio

    sid = store.create_session(owner=OWNER).id

    async def lifecycle() -> list[Any]:
        batch = await store.aappend_messages(
            sid,
            [{"role": "system", "content": "s", "token_count": 1}, {"role": "user", "content": "q"}],
            owner=OWNER,
        )
        reply = await store.aappend_message(
            sid, role="assistant", content="", owner=OWNER, status="in_progress"
        )
        await store.aextend_message(sid, reply.id, "hi", owner=OWNER)
        done = await store.aupdate_message(sid, reply.id, owner=OWNER, status="completed", token_count=1)
        context = await store.aget_context(sid, max_tokens=2, owner=OWNER)
        one = await store.aget_message(sid, 2, owner=OWNER)
        popped = await store.apop_message(sid, owner=OWNER)
        deleted = await store.adelete_message(sid, 2, owner=OWNER)
        truncated = await store.atruncate_messages(sid, after=0, owner=OWNER)
        with pytest.raises(MessageNotFound):
            await store.aget_message(sid, 2, owner=OWNER)
        return [
            ids(batch),
            done.content,
            ids(context),
            one.content,
            popped.id if popped else None,
            deleted,
            truncated,
        ]

    assert asyncio.run(lifecycle()) == [[1, 2], "hi", [1, 3], "q", 3, True, 1]
    assert [name for name, _ in recorded if name != "session_created"] == [
        "message_appended",
        "message_appended",
        "message_appended",
        "message_updated",
        "message_updated",
        "messages_removed",
        "messages_removed",
        "messages_removed",
    ]


def test_events_since_says_whether_the_stream_still_reaches_back(settings: Any, key_prefix: str) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "EVENT_HISTORY": 5}
    store = get_store()
    session = store.create_session(owner="u")
    for n in range(3):
        store.append_message(session.id, role="user", content=f"m{n}", owner="u")
    events, complete = store.events_since(session.id, "0-0", owner="u")
    assert complete  # nothing trimmed yet: a reader from the start misses nothing
    assert [e.message.content for e in events if e.message] == ["m0", "m1", "m2"]
    for n in range(3, 300):
        store.append_message(session.id, role="user", content=f"m{n}", owner="u")
    events, complete = store.events_since(session.id, "0-0", owner="u")
    assert not complete  # the oldest changes were trimmed away: the reader must reload
    recent, complete = store.events_since(session.id, events[-3].id, owner="u")
    assert complete
    assert [e.message.content for e in recent if e.message] == ["m298", "m299"]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s, sid, mid: s.append_message(sid, role="user", content="a\ud800b", owner=OWNER), "content"),
        (lambda s, sid, mid: s.update_message(sid, mid, content="\udfff", owner=OWNER), "content"),
        (lambda s, sid, mid: s.extend_message(sid, mid, "x\ud800", owner=OWNER), "text"),
        (lambda s, sid, mid: s.update_session(sid, title="t\ud800", owner=OWNER), "title"),
    ],
    ids=["append", "update", "extend", "title"],
)
def test_a_lone_surrogate_is_invalid_input_and_writes_nothing(
    store: ConversationStore, call: Callable[..., Any], field: str
) -> None:
    session = store.create_session(owner=OWNER, title="kept")
    reply = store.append_message(session.id, role="assistant", content="", owner=OWNER, status="in_progress")
    with pytest.raises(InvalidInput) as caught:
        call(store, session.id, reply.id)
    assert caught.value.field == field
    fetched = store.get_session(session.id, owner=OWNER)
    assert fetched is not None
    assert fetched.title == "kept"
    assert [(m.id, m.content) for m in fetched.messages] == [(reply.id, "")]

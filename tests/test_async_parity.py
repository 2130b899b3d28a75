"""Parity: the same calls through the sync methods and through their async twins give the same answers.

Two stores on the real Redis, each with a key prefix of its own: one driven through ``X``, the other
through ``aX`` on one event loop (its redis.asyncio client, as in production). Every call is made on
both, and the answers are compared after a normalisation that drops only what must differ: session ids
(random; mapped to the order they were created in), times, cursors and event ids (time-based). Errors
must match too (class and field). A hypothesis state machine drives random sequences over every public
method, lifecycle ones included; a fixed sequence covers each method and its error paths on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conversations.clients import get_async_redis_client
from conversations.exceptions import ConversationError
from conversations.store import (
    UNSET,
    ConversationStore,
    Event,
    Message,
    SessionPage,
    SessionSummary,
    StoreConfig,
    get_redis_client,
)
from tests.conftest import REDIS_URL, delete_prefix
from tests.redis_server import half_written_sessions

pytestmark = pytest.mark.redis

MAX_MESSAGES = 6  # small, so "session full" comes up
OWNERS = ["user:1", "user:2", None]


@dataclass
class Pair:
    """A sync store and an async one, fed the same calls. ``sessions[i]`` = (sync id, async id)."""

    sync: ConversationStore
    aio: ConversationStore
    loop: asyncio.AbstractEventLoop
    sessions: list[tuple[str, str]] = field(default_factory=list)

    def norm(self, value: Any, side: int) -> Any:
        """``value`` without what legitimately differs between the two stores."""
        ids = {pair[side]: n for n, pair in enumerate(self.sessions)}
        if isinstance(value, BaseException):
            return ("error", type(value).__name__, getattr(value, "field", None))
        if isinstance(value, Message):
            fields = (value.role, value.content, value.sources, value.status, value.data, value.token_count)
            return ("message", value.id, *fields)
        if isinstance(value, SessionSummary):
            messages = getattr(value, "messages", None)
            return (
                "session",
                ids.get(value.id, "?"),
                value.owner,
                value.title,
                value.metadata,
                value.message_count,
                value.expires_at is None,
                None if messages is None else [self.norm(m, side) for m in messages],
            )
        if isinstance(value, SessionPage):
            return ("page", [self.norm(s, side) for s in value.sessions], value.next_cursor is None)
        if isinstance(value, Event):
            detail: Any = None
            if value.kind == "message.extended":
                detail = value.delta
            elif value.kind == "messages.truncated":
                detail = value.payload
            return ("event", value.kind, value.message_id, self.norm(value.message, side), detail)
        if isinstance(value, list | tuple):
            return [self.norm(item, side) for item in value]
        return value

    def call(self, name: str, session: int | None, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """Call ``name`` on the sync store and ``a<name>`` on the async one (with the session of index
        ``session`` as first argument, when given); returns both raw answers (errors as values)."""
        answers: list[Any] = []
        for side, store in enumerate((self.sync, self.aio)):
            full = ((self.sessions[session][side],) if session is not None else ()) + args
            try:
                if side == 0:
                    answers.append(getattr(store, name)(*full, **kwargs))
                else:
                    answers.append(self.loop.run_until_complete(getattr(store, f"a{name}")(*full, **kwargs)))
            except ConversationError as exc:
                answers.append(exc)
        return answers[0], answers[1]

    def same(self, name: str, session: int | None, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """``call``, asserting both answers agree; returns them."""
        a, b = self.call(name, session, *args, **kwargs)
        assert self.norm(a, 0) == self.norm(b, 1), (name, args, kwargs, a, b)
        return a, b

    def create(self, **kwargs: Any) -> int | None:
        a, b = self.call("create_session", None, **kwargs)
        if isinstance(a, SessionSummary) and isinstance(b, SessionSummary):
            known = [n for n, pair in enumerate(self.sessions) if pair == (a.id, b.id)]
            if known:  # an idempotent repeat answered with an earlier session, on both sides
                return known[0]
            self.sessions.append((a.id, b.id))
        assert self.norm(a, 0) == self.norm(b, 1), (kwargs, a, b)
        return len(self.sessions) - 1 if isinstance(a, SessionSummary) else None

    def listing(self, owner: str | None, limit: int) -> None:
        """Every page of both listings: same page sizes, and the same sessions (their order agrees
        except between sessions touched in the same millisecond, which tie on time)."""
        pages: list[list[Any]] = [[], []]
        for side, store in enumerate((self.sync, self.aio)):
            cursor = None
            for _ in range(100):
                if side == 0:
                    page = store.list_sessions_page(owner=owner, limit=limit, cursor=cursor)
                else:
                    page = self.loop.run_until_complete(
                        store.alist_sessions_page(owner=owner, limit=limit, cursor=cursor)
                    )
                pages[side].append([self.norm(s, side) for s in page.sessions])
                cursor = page.next_cursor
                if cursor is None:
                    break
        assert [len(p) for p in pages[0]] == [len(p) for p in pages[1]]
        seen = [sorted(repr(s) for page in side_pages for s in page) for side_pages in pages]
        assert seen[0] == seen[1]
        a, b = self.call("list_sessions", None, owner=owner)
        assert sorted(map(repr, self.norm(a, 0))) == sorted(map(repr, self.norm(b, 1)))

    def close(self) -> None:
        self.loop.close()  # closes the loop's async clients too (conversations.clients)


@pytest.fixture
def pair(redis_url: str) -> Iterator[Pair]:
    yield from _pair()


def _pair() -> Iterator[Pair]:
    client = get_redis_client("default")
    prefixes = [f"cpar-{uuid.uuid4().hex[:10]}", f"cpar-{uuid.uuid4().hex[:10]}"]
    factory = functools.partial(get_async_redis_client, "default")
    stores = [
        ConversationStore(
            client, StoreConfig(key_prefix=p, max_messages=MAX_MESSAGES), async_client_factory=factory
        )
        for p in prefixes
    ]
    made = Pair(stores[0], stores[1], asyncio.new_event_loop())
    try:
        yield made
    finally:
        made.close()
        admin = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
        for prefix in prefixes:
            assert half_written_sessions(admin, prefix) == [], prefix
            delete_prefix(admin, prefix)
        admin.close()


# --------------------------------------------------------------------------- a fixed sequence


def test_every_method_and_its_errors_answer_the_same_both_ways(pair: Pair) -> None:
    p = pair
    s = p.create(owner="user:1", title="one", metadata={"k": [1, 2]})
    assert s == 0
    assert p.create(owner="user:1", title="again", idempotency_key="ck") == 1
    assert p.create(owner="user:1", title="again", idempotency_key="ck") == 1  # replayed, both ways
    p.same("create_session", None, owner="user:1", title="other", idempotency_key="ck")  # conflict
    p.same("create_session", None, owner="user:1", metadata="not a dict")  # InvalidInput
    other = p.create(owner="user:2")
    assert other is not None

    p.same("append_message", s, role="user", content="hello", owner="user:1", token_count=3)
    p.same(
        "append_message",
        s,
        role="assistant",
        content="",
        status="in_progress",
        owner="user:1",
        data={"model": "m"},
        sources=[{"title": "a"}],
    )
    p.same("append_message", s, role="user", content="idem", owner="user:1", idempotency_key="k1")
    p.same("append_message", s, role="user", content="idem", owner="user:1", idempotency_key="k1")  # replay
    p.same("append_message", s, role="user", content="changed", owner="user:1", idempotency_key="k1")
    p.same("append_message", s, role="wizard", content="x", owner="user:1")  # bad role
    p.same("append_message", s, role="user", content="x", owner="user:2")  # not the owner's
    p.same(
        "append_messages",
        s,
        [{"role": "user", "content": "a"}, {"role": "bad", "content": "b"}],
        owner="user:1",
    )
    p.same(
        "append_messages",
        s,
        [{"role": "user", "content": "b1"}, {"role": "tool", "content": "b2"}],
        owner="user:1",
    )
    p.same("append_messages", s, [], owner="user:1")
    p.same("append_message", s, role="user", content="full?", owner="user:1")  # the 6th message
    p.same("append_message", s, role="user", content="over", owner="user:1")  # SessionFull

    p.same("extend_message", s, 2, "streamed ", owner="user:1")
    p.same("extend_message", s, 2, "text", owner="user:1")
    p.same("extend_message", s, 1, "nope", owner="user:1")  # MessageNotInProgress
    p.same("extend_message", s, 99, "nope", owner="user:1")  # MessageNotFound
    p.same("update_message", s, 2, owner="user:1", status="completed", token_count=7, data=None)
    p.same("update_message", s, 1, owner="user:1", content="hello!", status=UNSET)
    p.same("update_message", s, 1, owner="user:1", status="weird")
    p.same("get_message", s, 2, owner="user:1")
    p.same("get_message", s, 42, owner="user:1")
    p.same("get_message", s, 0, owner="user:1")

    for window in (
        {},
        {"last": 2},
        {"after": 2},
        {"before": 4},
        {"after": 1, "before": 5, "limit": 2},
        {"limit": 0},
    ):
        p.same("get_messages", s, owner="user:1", **window)
    p.same("get_session", s, owner="user:1")
    p.same("get_session", s, owner="user:2")
    p.same("get_session_head", s, owner="user:1", last=2)
    p.same("get_session_head", s, owner="user:1", last=-1)
    p.same("get_session_summary", s, owner="user:1")
    p.same("count_messages", s, owner="user:1")
    p.same("get_context", s, max_tokens=10, owner="user:1")
    p.same("get_context", s, max_tokens=10_000, owner="user:1", include_system=False)
    p.same("get_context", s, max_tokens=0, owner="user:1")
    p.same("events_since", s, "0-0", owner="user:1")
    p.same("events_since", s, "not-an-id", owner="user:1")

    p.same("update_session", s, owner="user:1", title="renamed", metadata={"x": None})
    p.same("update_session", s, owner="user:1", title="t" * 10_000)
    p.same("delete_message", s, 3, owner="user:1")
    p.same("delete_message", s, 3, owner="user:1")  # already gone: False
    p.same("pop_message", s, owner="user:1")
    p.same("truncate_messages", s, after=1, owner="user:1")
    p.same("pop_message", s, owner="user:1")
    p.same("pop_message", s, owner="user:1")  # empty: None
    p.same("save_message", s, role="user", content="saved", owner="user:1")
    p.same("save_message", other, role="user", content="saved", owner="user:1")  # not the owner's: None
    p.same("append_message", s, role="user", content="idem", owner="user:1", idempotency_key="k1")  # removed
    p.same("events_since", s, "0-0", owner="user:1")
    p.listing("user:1", 1)
    p.listing("user:1", 50)
    p.same("list_sessions_page", None, owner="user:1", limit=0)
    p.same("list_sessions_page", None, owner="user:1", cursor="garbage")

    p.same("delete_session", s, owner="user:2")
    p.same("delete_session", s, owner="user:1")
    p.same("delete_session", s, owner="user:1")
    for method in ("get_session_summary", "count_messages", "get_messages", "pop_message", "events_since"):
        args = ("0-0",) if method == "events_since" else ()
        p.same(method, s, *args, owner="user:1")
    p.same("delete_owner_sessions", None, "user:1")
    p.same("delete_owner_sessions", None, "user:1")
    p.listing("user:1", 5)
    p.listing("user:2", 5)


# --------------------------------------------------------------------------- random sequences

owners = st.sampled_from([*OWNERS, OWNERS[0]])
roles = st.sampled_from(["user", "assistant", "system", "tool", "nobody"])
statuses = st.sampled_from(["completed", "in_progress", "incomplete"])
texts = st.text(max_size=10)
small = st.integers(-1, MAX_MESSAGES + 2)
datas = st.none() | st.dictionaries(texts, st.integers() | texts, max_size=2)


class ParityMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._pairs = _pair()
        self.p = next(self._pairs)
        self.owner_of: list[str | None] = []

    def teardown(self) -> None:
        for _ in self._pairs:  # runs the generator's cleanup
            pass

    def caller(self, session: int, stranger: bool) -> str | None:
        owner = self.owner_of[session]
        return ("user:9" if owner != "user:9" else "user:1") if stranger else owner

    def has_sessions(self) -> bool:
        return bool(self.owner_of)

    @rule(owner=owners, title=texts, key=st.none() | st.sampled_from(["c1", "c2"]))
    def create(self, owner: str | None, title: str, key: str | None) -> None:
        before = len(self.p.sessions)
        index = self.p.create(owner=owner, title=title, idempotency_key=key)
        if index is not None and len(self.p.sessions) > before:
            self.owner_of.append(owner)

    @precondition(has_sessions)
    @rule(
        data=st.data(),
        role=roles,
        content=texts,
        status=statuses,
        extra=datas,
        stranger=st.booleans(),
        key=st.none() | st.sampled_from(["k1", "k2"]),
        tokens=st.none() | st.integers(-1, 50),
    )
    def append(
        self,
        data: st.DataObject,
        role: str,
        content: str,
        status: str,
        extra: Any,
        stranger: bool,
        key: str | None,
        tokens: int | None,
    ) -> None:
        s = data.draw(st.integers(0, len(self.owner_of) - 1))
        self.p.same(
            "append_message",
            s,
            role=role,
            content=content,
            status=status,
            data=extra,
            owner=self.caller(s, stranger),
            idempotency_key=key,
            token_count=tokens,
        )

    @precondition(has_sessions)
    @rule(data=st.data(), batch=st.lists(st.tuples(roles, texts, statuses), max_size=3))
    def append_batch(self, data: st.DataObject, batch: list[tuple[str, str, str]]) -> None:
        s = data.draw(st.integers(0, len(self.owner_of) - 1))
        specs = [{"role": r, "content": c, "status": st_} for r, c, st_ in batch]
        self.p.same("append_messages", s, specs, owner=self.owner_of[s])

    @precondition(has_sessions)
    @rule(data=st.data(), mid=small, text=texts, stranger=st.booleans())
    def extend(self, data: st.DataObject, mid: int, text: str, stranger: bool) -> None:
        s = data.draw(st.integers(0, len(self.owner_of) - 1))
        self.p.same("extend_message", s, mid, text, owner=self.caller(s, stranger))

    @precondition(has_sessions)
    @rule(
        data=st.data(),
        mid=small,
        status=st.just(UNSET) | statuses,
        content=st.just(UNSET) | texts,
        extra=st.just(UNSET) | datas,
    )
    def update_message(self, data: st.DataObject, mid: int, status: Any, content: Any, extra: Any) -> None:
        s = data.draw(st.integers(0, len(self.owner_of) - 1))
        self.p.same(
            "update_message", s, mid, owner=self.owner_of[s], status=status, content=content, data=extra
        )

    @precondition(has_sessions)
    @rule(data=st.data(), mid=small, after=small, which=st.sampled_from(["delete", "truncate", "pop"]))
    def remove(self, data: st.DataObject, mid: int, after: int, which: str) -> None:
        s = data.draw(st.integers(0, len(self.owner_of) - 1))
        owner = self.owner_of[s]
        if which == "delete":
            self.p.same("delete_message", s, mid, owner=owner)
        elif which == "truncate":
            self.p.same("truncate_messages", s, after=after, owner=owner)
        else:
            self.p.same("pop_message", s, owner=owner)

    @precondition(has_sessions)
    @rule(
        data=st.data(),
        a=st.none() | small,
        b=st.none() | small,
        last=st.none() | small,
        limit=st.integers(1, 4),
        stranger=st.booleans(),
        budget=st.integers(1, 20),
    )
    def read(
        self, data: st.DataObject, a: Any, b: Any, last: Any, limit: int, stranger: bool, budget: int
    ) -> None:
        s = data.draw(st.integers(0, len(self.owner_of) - 1))
        who = self.caller(s, stranger)
        self.p.same("get_messages", s, owner=who, after=a, before=b, last=last, limit=limit)
        self.p.same("get_message", s, a if a is not None else 1, owner=who)
        self.p.same("get_session", s, owner=who)
        self.p.same("get_session_head", s, owner=who, last=limit)
        self.p.same("get_session_summary", s, owner=who)
        self.p.same("count_messages", s, owner=who)
        self.p.same("get_context", s, max_tokens=budget, owner=who, include_system=bool(limit % 2))
        self.p.same("events_since", s, "0-0", owner=who)

    @precondition(has_sessions)
    @rule(
        data=st.data(),
        title=st.just(UNSET) | texts,
        meta=st.just(UNSET) | st.dictionaries(texts, texts, max_size=2),
    )
    def update_session(self, data: st.DataObject, title: Any, meta: Any) -> None:
        s = data.draw(st.integers(0, len(self.owner_of) - 1))
        self.p.same("update_session", s, owner=self.owner_of[s], title=title, metadata=meta)

    @precondition(has_sessions)
    @rule(data=st.data(), stranger=st.booleans(), content=texts)
    def save_or_delete(self, data: st.DataObject, stranger: bool, content: str) -> None:
        s = data.draw(st.integers(0, len(self.owner_of) - 1))
        who = self.caller(s, stranger)
        if data.draw(st.booleans()):
            self.p.same("save_message", s, role="user", content=content, owner=who)
        else:
            self.p.same("delete_session", s, owner=who)

    @rule(owner=owners, limit=st.integers(1, 3))
    def list_all(self, owner: str | None, limit: int) -> None:
        self.p.listing(owner, limit)

    @rule(owner=owners)
    def erase_owner(self, owner: str | None) -> None:
        self.p.same("delete_owner_sessions", None, owner)

    @invariant()
    def counts_agree(self) -> None:
        for s, owner in enumerate(self.owner_of):
            self.p.same("count_messages", s, owner=owner)


def test_random_call_sequences_answer_the_same_both_ways(redis_url: str) -> None:
    run_state_machine_as_test(
        ParityMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

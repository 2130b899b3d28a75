"""Model-based tests: hypothesis drives random sequences of store calls (create, append, idempotent
append and create, batch append, read windows, read, count, update, delete, erase an owner, expire,
list, page, and the message lifecycle: update, extend, delete, truncate and pop a message) and
compares every answer with a plain in-memory model. The same machine runs on fakeredis and on the real
Redis (a fresh key prefix per example, deleted afterwards).

Expiry: sleeping out a real ``SESSION_TTL`` per step is too slow, and fakeredis cannot travel in time.
The ``expire`` rule instead gives every key of a session a 1 ms TTL and waits 5 ms, so Redis's own
expiry removes it (not a DEL). That leaves the owner index entry behind exactly as a real expiry does,
so listings must prune it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from conversations.exceptions import (
    IdempotencyConflict,
    InvalidInput,
    MessageNotFound,
    MessageNotInProgress,
    SessionFull,
    SessionNotFound,
)
from conversations.store import UNSET, ConversationStore, Message, SessionSummary, StoreConfig, validation
from conversations.store.keys import digest
from tests.conftest import delete_prefix
from tests.redis_server import half_written_sessions

MAX_MESSAGES = 6  # small, so "session full" is reached often
OWNERS = ["user:1", "user:2", None]
UNKNOWN_ID = "A" * 22  # well-formed, never created

# Weighted towards one owner, so that one owner soon has enough sessions for listings to page.
owners = st.sampled_from([*OWNERS, OWNERS[0], OWNERS[0]])
# Who calls, relative to the session's owner: mostly its owner (so sessions grow), sometimes a stranger.
callers = st.sampled_from(["owner", "owner", "owner", "stranger"])
roles = st.sampled_from(["user", "assistant", "system", "tool"])
texts = st.text(max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
metadatas = st.dictionaries(texts, json_values, max_size=3)
sources_lists = st.lists(st.dictionaries(texts, json_values, max_size=2), max_size=2)
idempotency_keys = st.sampled_from(["k1", "k2"])
statuses = st.sampled_from(["completed", "completed", "in_progress", "incomplete"])
# A message to act on: -n is the n-th newest message the session holds (if any), n > 0 the id n
# itself (often missing: never handed out, or removed).
message_picks = st.integers(-3, 3 * MAX_MESSAGES)

#: A message in the model: id, role, content, sources, status.
ModelMessage = tuple[int, str, str, list[dict[str, Any]], str]


@dataclass
class ModelSession:
    owner: str | None
    title: str
    metadata: dict[str, Any]
    messages: list[ModelMessage] = field(default_factory=list)
    # idempotency key -> (role, content, sources, first message id, last message id)
    keys: dict[str, tuple[str, str, list[dict[str, Any]], int, int]] = field(default_factory=dict)
    alive: bool = True
    seq: int = 0  # the highest message id handed out: ids never come back

    def add(self, role: str, content: str, sources: list[dict[str, Any]], status: str) -> ModelMessage:
        self.seq += 1
        message = (self.seq, role, content, sources, status)
        self.messages.append(message)
        return message

    def index_of(self, message_id: int) -> int | None:
        return next((i for i, m in enumerate(self.messages) if m[0] == message_id), None)

    def pick(self, choice: int) -> int:
        if choice < 0:
            return self.messages[choice][0] if len(self.messages) >= -choice else 1
        return choice or 1


class StoreMachine(RuleBasedStateMachine):
    """Subclasses say which Redis: ``make_client()``."""

    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.client = self.make_client()
        self.prefix = f"cm-{uuid.uuid4().hex[:12]}"
        self.store = ConversationStore(
            self.client, StoreConfig(key_prefix=self.prefix, max_messages=MAX_MESSAGES)
        )
        self.model: dict[str, ModelSession] = {}
        # (owner, key) -> (title, metadata, session id) of an idempotent create
        self.create_keys: dict[tuple[str | None, str], tuple[str, dict[str, Any], str]] = {}

    def make_client(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def teardown(self) -> None:
        delete_prefix(self.client, self.prefix)
        self.client.close()

    # ----------------------------------------------------------------- helpers

    def caller(self, session_id: str, who: str) -> str | None:
        session = self.model.get(session_id)
        owner = session.owner if session is not None else OWNERS[0]
        if who == "owner":
            return owner
        return OWNERS[(OWNERS.index(owner) + 1) % len(OWNERS)]

    def visible(self, session_id: str, caller: str | None) -> ModelSession | None:
        session = self.model.get(session_id)
        if session is None or not session.alive or session.owner != caller:
            return None
        return session

    @staticmethod
    def as_tuples(messages: list[Message]) -> list[ModelMessage]:
        return [(m.id, m.role, m.content, m.sources, m.status) for m in messages]

    def check_summary(self, summary: SessionSummary, expected: ModelSession) -> None:
        assert summary.owner == expected.owner
        assert summary.title == expected.title
        assert summary.metadata == expected.metadata
        assert summary.message_count == len(expected.messages)
        assert summary.updated_at >= summary.created_at

    def new_session(self, owner: str | None, title: str, metadata: dict[str, Any], session_id: str) -> None:
        assert session_id not in self.model, "a session id was handed out twice"
        self.model[session_id] = ModelSession(owner=owner, title=title, metadata=metadata)

    # ----------------------------------------------------------------- rules

    @rule(target=sessions, owner=owners, title=texts, metadata=metadatas)
    def create(self, owner: str | None, title: str, metadata: dict[str, Any]) -> str:
        session = self.store.create_session(metadata, owner=owner, title=title)
        self.new_session(owner, title, metadata, session.id)
        self.check_summary(session, self.model[session.id])
        return session.id

    @rule(target=sessions, owner=owners, title=texts, key=idempotency_keys)
    def create_idempotent(self, owner: str | None, title: str, key: str) -> str:
        prior = self.create_keys.get((owner, key))
        if prior is not None and prior[0] != title:
            try:
                self.store.create_session({}, owner=owner, title=title, idempotency_key=key)
            except IdempotencyConflict:
                return prior[2]
            raise AssertionError("a reused create key with another title was accepted")
        session = self.store.create_session({}, owner=owner, title=title, idempotency_key=key)
        if prior is not None and self.visible(prior[2], owner) is not None:
            assert session.id == prior[2], "a retried create made a second session"
        else:
            self.new_session(owner, title, {}, session.id)
            self.create_keys[(owner, key)] = (title, {}, session.id)
        return session.id

    @rule(
        session_id=sessions | st.just(UNKNOWN_ID),
        who=callers,
        role=roles,
        content=texts,
        sources=sources_lists,
        status=statuses,
    )
    def append(
        self,
        session_id: str,
        who: str,
        role: str,
        content: str,
        sources: list[dict[str, Any]],
        status: str = "completed",
    ) -> None:
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)

        def call() -> Message:
            return self.store.append_message(
                session_id, role=role, content=content, sources=sources, owner=caller, status=status
            )

        if expected is None:
            with pytest.raises(SessionNotFound):
                call()
            return
        if len(expected.messages) >= MAX_MESSAGES:
            with pytest.raises(SessionFull):
                call()
            return
        message = call()
        assert self.as_tuples([message]) == [expected.add(role, content, sources, status)]

    @rule(
        session_id=sessions | st.just(UNKNOWN_ID),
        who=callers,
        batch=st.lists(st.tuples(roles, texts, statuses), min_size=1, max_size=3),
        broken=st.integers(-1, 2),
    )
    def append_batch(self, session_id: str, who: str, batch: list[tuple[str, str, str]], broken: int) -> None:
        """``append_messages``: consecutive ids, all or nothing (``broken``: one message is invalid)."""
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)
        specs: list[dict[str, Any]] = [{"role": r, "content": c, "status": st_} for r, c, st_ in batch]
        if 0 <= broken < len(specs):
            specs[broken]["role"] = "robot"
            with pytest.raises(InvalidInput) as caught:
                self.store.append_messages(session_id, specs, owner=caller)
            assert caught.value.field == f"messages[{broken}].role"
            return
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.store.append_messages(session_id, specs, owner=caller)
            return
        if len(expected.messages) + len(specs) > MAX_MESSAGES:
            with pytest.raises(SessionFull):
                self.store.append_messages(session_id, specs, owner=caller)
            return
        got = self.store.append_messages(session_id, specs, owner=caller)
        assert self.as_tuples(got) == [expected.add(r, c, [], st_) for r, c, st_ in batch]

    @rule(session_id=sessions, n=st.integers(1, MAX_MESSAGES), content=texts)
    def append_burst(self, session_id: str, n: int, content: str) -> None:
        """Several appends by the owner in one step, so sessions reach their limit within a run."""
        for i in range(n):
            self.append(session_id, "owner", "assistant", f"{content}{i}", [])

    @rule(session_id=sessions, who=callers, key=idempotency_keys, role=roles, content=texts)
    def append_idempotent(self, session_id: str, who: str, key: str, role: str, content: str) -> None:
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)

        def call() -> Message:
            return self.store.append_message(
                session_id, role=role, content=content, owner=caller, idempotency_key=key
            )

        if expected is None:
            with pytest.raises(SessionNotFound):
                call()
            return
        prior = expected.keys.get(key)
        if prior is not None:
            index = expected.index_of(prior[3])
            if prior[:2] != (role, content) or prior[2] != [] or index is None:
                # Another message, or the first call's message has since been removed: never a
                # message that is not in the session.
                with pytest.raises(IdempotencyConflict):
                    call()
                return
            assert self.as_tuples([call()]) == [expected.messages[index]], "a retry appended again"
            return
        if len(expected.messages) >= MAX_MESSAGES:
            with pytest.raises(SessionFull):
                call()
            return
        message = call()
        added = expected.add(role, content, [], "completed")
        expected.keys[key] = (role, content, [], added[0], added[0])
        assert self.as_tuples([message]) == [added]

    @rule(
        session_id=sessions,
        who=callers,
        a=st.integers(0, MAX_MESSAGES + 2),
        b=st.integers(0, MAX_MESSAGES + 2),
        limit=st.integers(1, MAX_MESSAGES + 1),
    )
    def read_windows(self, session_id: str, who: str, a: int, b: int, limit: int) -> None:
        """Every kind of window (last N, after, before, between, from the start) with the drawn bounds."""
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)
        everything = list(expected.messages) if expected else []
        windows: list[tuple[dict[str, int], list[Any]]] = [
            ({"last": a or 1}, everything[-(a or 1) :]),
            ({"after": a, "limit": limit}, [m for m in everything if m[0] > a][:limit]),
            ({"before": b, "limit": limit}, [m for m in everything if m[0] < b][-limit:]),
            ({"after": a, "before": b, "limit": limit}, [m for m in everything if a < m[0] < b][-limit:]),
            ({"limit": limit}, everything[:limit]),
        ]
        for kwargs, want in windows:
            if expected is None:
                with pytest.raises(SessionNotFound):
                    self.store.get_messages(session_id, owner=caller, **kwargs)
            else:
                got = self.as_tuples(self.store.get_messages(session_id, owner=caller, **kwargs))
                assert got == want, kwargs

    @rule(session_id=sessions | st.just(UNKNOWN_ID), who=callers)
    def read_session(self, session_id: str, who: str) -> None:
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)
        session = self.store.get_session(session_id, owner=caller)
        if expected is None:
            assert session is None
            with pytest.raises(SessionNotFound):
                self.store.count_messages(session_id, owner=caller)
            return
        assert session is not None
        self.check_summary(session, expected)
        assert self.as_tuples(session.messages) == expected.messages
        stamps = [m.created_at for m in session.messages]
        assert stamps == sorted(stamps), "messages out of time order"
        assert self.store.count_messages(session_id, owner=caller) == len(expected.messages)

    @rule(
        session_id=sessions,
        who=callers,
        title=st.none() | texts,
        metadata=st.none() | metadatas,
    )
    def update(self, session_id: str, who: str, title: str | None, metadata: dict[str, Any] | None) -> None:
        caller = self.caller(session_id, who)
        # None here means "leave it unchanged" (UNSET), so both halves get exercised alone and together.
        kwargs: dict[str, Any] = {
            "title": UNSET if title is None else title,
            "metadata": UNSET if metadata is None else metadata,
        }
        expected = self.visible(session_id, caller)
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.store.update_session(session_id, owner=caller, **kwargs)
            return
        summary = self.store.update_session(session_id, owner=caller, **kwargs)
        if title is not None:
            expected.title = title
        if metadata is not None:
            expected.metadata = metadata
        self.check_summary(summary, expected)

    # ----------------------------------------------------------------- the message lifecycle

    @rule(
        session_id=sessions,
        who=callers,
        choice=message_picks,
        content=st.none() | texts,
        status=st.none() | statuses,
    )
    def update_message(
        self, session_id: str, who: str, choice: int, content: str | None, status: str | None
    ) -> None:
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)
        kwargs: dict[str, Any] = {
            "content": UNSET if content is None else content,
            "status": UNSET if status is None else status,
        }
        message_id = expected.pick(choice) if expected else 1
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.store.update_message(session_id, message_id, owner=caller, **kwargs)
            return
        index = expected.index_of(message_id)
        if index is None:
            with pytest.raises(MessageNotFound):
                self.store.update_message(session_id, message_id, owner=caller, **kwargs)
            return
        mid, role, old_content, sources, old_status = expected.messages[index]
        expected.messages[index] = (
            mid,
            role,
            old_content if content is None else content,
            sources,
            old_status if status is None else status,
        )
        got = self.store.update_message(session_id, message_id, owner=caller, **kwargs)
        assert self.as_tuples([got]) == [expected.messages[index]]

    @rule(session_id=sessions, who=callers, choice=message_picks, text=texts)
    def extend_message(self, session_id: str, who: str, choice: int, text: str) -> None:
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)
        message_id = expected.pick(choice) if expected else 1
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.store.extend_message(session_id, message_id, text, owner=caller)
            return
        index = expected.index_of(message_id)
        if index is None:
            with pytest.raises(MessageNotFound):
                self.store.extend_message(session_id, message_id, text, owner=caller)
            return
        mid, role, content, sources, status = expected.messages[index]
        if status != "in_progress":
            with pytest.raises(MessageNotInProgress):
                self.store.extend_message(session_id, message_id, text, owner=caller)
            return
        expected.messages[index] = (mid, role, content + text, sources, status)
        got = self.store.extend_message(session_id, message_id, text, owner=caller)
        assert self.as_tuples([got]) == [expected.messages[index]]

    @rule(session_id=sessions, who=callers, choice=message_picks)
    def delete_message(self, session_id: str, who: str, choice: int) -> None:
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)
        message_id = expected.pick(choice) if expected else 1
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.store.delete_message(session_id, message_id, owner=caller)
            return
        index = expected.index_of(message_id)
        assert self.store.delete_message(session_id, message_id, owner=caller) is (index is not None)
        if index is not None:
            del expected.messages[index]

    @rule(session_id=sessions, who=callers, after=st.integers(0, 3 * MAX_MESSAGES))
    def truncate(self, session_id: str, who: str, after: int) -> None:
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.store.truncate_messages(session_id, after=after, owner=caller)
            return
        kept = [m for m in expected.messages if m[0] <= after]
        removed = len(expected.messages) - len(kept)
        assert self.store.truncate_messages(session_id, after=after, owner=caller) == removed
        expected.messages = kept

    @rule(session_id=sessions, who=callers)
    def pop(self, session_id: str, who: str) -> None:
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.store.pop_message(session_id, owner=caller)
            return
        got = self.store.pop_message(session_id, owner=caller)
        if not expected.messages:
            assert got is None
            return
        assert got is not None
        assert self.as_tuples([got]) == [expected.messages.pop()]

    @rule(session_id=sessions | st.just(UNKNOWN_ID), who=callers)
    def delete(self, session_id: str, who: str) -> None:
        caller = self.caller(session_id, who)
        expected = self.visible(session_id, caller)
        assert self.store.delete_session(session_id, owner=caller) is (expected is not None)
        if expected is not None:
            expected.alive = False
            self.forget_create_keys({session_id})

    def forget_create_keys(self, session_ids: set[str]) -> None:
        """A create's idempotency record lives exactly as long as its session: gone with it."""
        for name, (_, _, sid) in list(self.create_keys.items()):
            if sid in session_ids:
                del self.create_keys[name]

    @rule(caller=owners)
    def erase_owner(self, caller: str | None) -> None:
        mine = [sid for sid, s in self.model.items() if s.alive and s.owner == caller]
        assert self.store.delete_owner_sessions(caller) == len(mine)
        for sid in mine:
            self.model[sid].alive = False
        self.forget_create_keys(set(mine))

    @rule(session_id=sessions)
    def expire(self, session_id: str) -> None:
        for key in self.store.keys.session_keys(session_id):
            self.client.pexpire(key, 1)
        # Its create record (if any) carries the same expiry in real life: expire it alongside.
        for (owner, key), (_, _, sid) in self.create_keys.items():
            if sid == session_id:
                self.client.pexpire(self.store.keys.owner_idempotency(owner or "", digest(key)), 1)
        time.sleep(0.005)
        self.model[session_id].alive = False
        self.forget_create_keys({session_id})

    @rule(caller=owners)
    def list_all(self, caller: str | None) -> None:
        listed = self.store.list_sessions(owner=caller)
        ids = [s.id for s in listed]
        assert len(ids) == len(set(ids)), "a session was listed twice"
        assert set(ids) == {sid for sid, s in self.model.items() if s.alive and s.owner == caller}
        for summary in listed:
            self.check_summary(summary, self.model[summary.id])
        stamps = [s.updated_at for s in listed]
        assert stamps == sorted(stamps, reverse=True), "not most recently active first"

    @rule(caller=owners, limit=st.integers(1, 2))
    def list_pages(self, caller: str | None, limit: int) -> None:
        ids: list[str] = []
        cursor: str | None = None
        for _ in range(len(self.model) + 2):
            page = self.store.list_sessions_page(owner=caller, limit=limit, cursor=cursor)
            assert len(page.sessions) <= limit
            ids.extend(s.id for s in page.sessions)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert cursor is None, "pagination did not end"
        assert len(ids) == len(set(ids)), "a session appeared on two pages"
        assert set(ids) == {sid for sid, s in self.model.items() if s.alive and s.owner == caller}

    # ----------------------------------------------------------------- invariants

    @invariant()
    def nothing_half_written(self) -> None:
        # Expired sessions leave index entries until a listing prunes them, so the index is not checked.
        # The keys are named rather than SCANned: the shared Redis may hold millions of others'.
        keys = [key for session_id in self.model for key in self.store.keys.session_keys(session_id)]
        keys += [self.store.keys.owner_index(validation.owner_value(owner)) for owner in OWNERS]
        assert half_written_sessions(self.client, self.prefix, check_index=False, keys=keys) == []


class FakeRedisMachine(StoreMachine):
    def make_client(self) -> Any:
        return fakeredis.FakeRedis(server=fakeredis.FakeServer())


class RealRedisMachine(StoreMachine):
    url = ""

    def make_client(self) -> Any:
        return redis.Redis.from_url(self.url, socket_timeout=10)


MODEL_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_store_matches_the_model_on_fakeredis() -> None:
    run_state_machine_as_test(FakeRedisMachine, settings=MODEL_SETTINGS)


@pytest.mark.redis
def test_store_matches_the_model_on_real_redis(redis_url: str) -> None:
    RealRedisMachine.url = redis_url
    run_state_machine_as_test(RealRedisMachine, settings=settings(MODEL_SETTINGS, max_examples=60))


def test_found_by_the_model_a_window_before_an_id_past_the_end(fake_store: ConversationStore) -> None:
    """The machine's first catch, kept as a plain example: ``before`` past the last message used to read
    positions that do not exist and return nothing, instead of the newest messages below it."""
    session = fake_store.create_session()
    for content in "abcde":
        fake_store.append_message(session.id, role="user", content=content)

    def window(**kwargs: int) -> list[str]:
        return [m.content for m in fake_store.get_messages(session.id, **kwargs)]

    assert window(before=3, limit=5) == ["a", "b"]
    assert window(before=50, limit=2) == ["d", "e"]
    assert window(after=1, before=50, limit=2) == ["d", "e"]
    assert window(after=3, before=50, limit=5) == ["d", "e"]
    assert window(after=5, before=50, limit=5) == []

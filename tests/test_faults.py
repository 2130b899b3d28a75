"""Redis failing under the app: killed, frozen, paused, out of memory, evicting keys.

Every test here runs its own redis-server on a free port (``private_redis`` / ``private_cache`` fixtures,
tests/redis_server.py) and reaches it through django-redis with 0.5 s socket timeouts, exactly as a site
would. The shared Redis is never paused, killed or reconfigured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from conversations.exceptions import SessionNotFound, StoreOutOfMemory, StoreUnavailable
from conversations.store import ConversationStore, get_store
from tests.redis_server import PrivateRedis, half_written_sessions
from tests.test_views import SESSIONS, call, detail, endpoints, messages_url

pytestmark = pytest.mark.redis

SOCKET_TIMEOUT = 0.5  # what the private_cache fixture configures
# A failing call must come back within this: one socket timeout plus a wide margin for a loaded, shared
# machine. A hang (the bug this guards against) would be unbounded, or 10+ s with redis-py's retries.
CALL_BOUND = SOCKET_TIMEOUT + 2.5
WAIT_BOUND = 30.0  # bound on every "wait until" below, so a broken build fails instead of hanging


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_BOUND) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def timed(call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def every_store_call(store: ConversationStore, session_id: str, owner: str) -> dict[str, Callable[[], Any]]:
    """One call of each public store method, aimed at an existing session."""
    return {
        "create_session": lambda: store.create_session(owner=owner),
        "get_session": lambda: store.get_session(session_id, owner=owner),
        "append_message": lambda: store.append_message(session_id, role="user", content="x", owner=owner),
        "get_messages": lambda: store.get_messages(session_id, owner=owner, last=5),
        "count_messages": lambda: store.count_messages(session_id, owner=owner),
        "update_session": lambda: store.update_session(session_id, owner=owner, title="t"),
        "list_sessions_page": lambda: store.list_sessions_page(owner=owner),
        "delete_session": lambda: store.delete_session(session_id, owner=owner),
        "delete_owner_sessions": lambda: store.delete_owner_sessions("nobody"),
    }


@dataclass
class Writer:
    """Appends ``<name>:0``, ``<name>:1``, ... to one session, as a careful client does: every message
    carries an idempotency key, and after ``StoreUnavailable`` the same message is retried with the same
    key until it is acknowledged. ``acked`` counts acknowledged messages; ``failures`` holds
    (seconds the failing call took, the error)."""

    store: ConversationStore
    session_id: str
    owner: str
    name: str
    stop: threading.Event
    acked: int = 0
    failures: list[tuple[float, BaseException]] = field(default_factory=list)
    unexpected: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        deadline = time.monotonic() + 2 * WAIT_BOUND
        while not self.stop.is_set() and time.monotonic() < deadline:
            i = self.acked
            started = time.monotonic()
            try:
                self.store.append_message(
                    self.session_id,
                    role="user",
                    content=f"{self.name}:{i}",
                    owner=self.owner,
                    idempotency_key=f"{self.name}:{i}",
                )
            except StoreUnavailable as exc:
                self.failures.append((time.monotonic() - started, exc))
                time.sleep(0.02)
                continue
            except BaseException as exc:
                self.unexpected.append(exc)
                return
            self.acked += 1


def run_writers(writers: list[Writer]) -> list[threading.Thread]:
    threads = [threading.Thread(target=w.run, daemon=True) for w in writers]
    for thread in threads:
        thread.start()
    return threads


def join_writers(writers: list[Writer], threads: list[threading.Thread]) -> None:
    writers[0].stop.set()
    for thread in threads:
        thread.join(WAIT_BOUND)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    assert [w.unexpected for w in writers] == [[] for _ in writers]


def assert_transcripts_exact(store: ConversationStore, writers: list[Writer]) -> None:
    """Each writer finds every message it was told was stored, exactly once, in its order; ids are
    1..n with no gap."""
    by_session: dict[str, list[Writer]] = {}
    for writer in writers:
        by_session.setdefault(writer.session_id, []).append(writer)
    for session_id, members in by_session.items():
        owner = members[0].owner
        messages = store.get_messages(session_id, owner=owner, limit=100_000)
        assert [m.id for m in messages] == list(range(1, len(messages) + 1))
        assert store.count_messages(session_id, owner=owner) == len(messages)
        for writer in members:
            mine = [m.content for m in messages if m.content.startswith(f"{writer.name}:")]
            assert mine == [f"{writer.name}:{i}" for i in range(writer.acked)], writer.name
        assert len(messages) == sum(w.acked for w in members)


def assert_failures_clear_and_prompt(writers: list[Writer], cause: type[BaseException]) -> None:
    for writer in writers:
        assert writer.failures, f"{writer.name} never saw Redis fail: the test proved nothing"
        for seconds, exc in writer.failures:
            assert isinstance(exc, StoreUnavailable)
            assert isinstance(exc.__cause__, cause), repr(exc.__cause__)
            assert seconds < CALL_BOUND, f"a failing call took {seconds:.2f} s"


# --------------------------------------------------------------------------- Redis killed, then back


def test_killed_redis_fails_fast_and_the_same_process_recovers(private_cache: PrivateRedis) -> None:
    server = private_cache
    store = get_store()
    stop = threading.Event()
    sessions = [store.create_session(owner=f"user:{i}") for i in range(4)]
    outcomes: list[dict[str, Any]] = [{"ok": 0, "down": [], "gone": 0, "other": []} for _ in sessions]

    def write(i: int) -> None:
        # No retry here: the server comes back empty (no persistence), so we watch raw outcomes.
        mine = outcomes[i]
        while not stop.is_set():
            started = time.monotonic()
            try:
                store.append_message(sessions[i].id, role="user", content="m", owner=f"user:{i}")
                mine["ok"] += 1
            except StoreUnavailable as exc:
                mine["down"].append((time.monotonic() - started, exc))
                time.sleep(0.01)
            except SessionNotFound:
                mine["gone"] += 1
                time.sleep(0.01)
            except BaseException as exc:
                mine["other"].append(exc)
                return

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(o["ok"] >= 20 for o in outcomes), "appends before the kill")
        server.kill()
        wait_until(lambda: all(len(o["down"]) >= 3 for o in outcomes), "every writer to see the outage")

        # While Redis is down every method fails with StoreUnavailable, promptly.
        for name, call in every_store_call(store, sessions[0].id, "user:0").items():
            seconds, exc = timed(call)
            assert isinstance(exc, StoreUnavailable), (name, exc)
            assert isinstance(exc.__cause__, redis.ConnectionError), (name, exc.__cause__)
            assert seconds < CALL_BOUND, (name, seconds)

        server.restart()  # same port, empty (no persistence): the writers' sessions are gone
        wait_until(lambda: all(o["gone"] >= 3 for o in outcomes), "the writers to reach the new server")
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT_BOUND)
    assert [o["other"] for o in outcomes] == [[] for _ in outcomes]
    for outcome in outcomes:
        for seconds, exc in outcome["down"]:
            assert isinstance(exc.__cause__, redis.ConnectionError | redis.TimeoutError)
            assert seconds < CALL_BOUND, f"a failing call took {seconds:.2f} s"

    # The same store object, in the same process, works again: nothing to restart.
    session = store.create_session(owner="user:9", title="after")
    for i in range(3):
        store.append_message(session.id, role="user", content=str(i), owner="user:9")
    again = store.get_session(session.id, owner="user:9")
    assert again is not None
    assert [m.content for m in again.messages] == ["0", "1", "2"]
    assert [s.id for s in store.list_sessions(owner="user:9")] == [session.id]
    assert half_written_sessions(server.admin(), store.keys.prefix) == []


# --------------------------------------------------------------------------- Redis frozen or paused


def _sigstop(server: PrivateRedis) -> Callable[[], None]:
    server.stop_signal()
    return server.continue_signal


def _client_pause_all(server: PrivateRedis) -> Callable[[], None]:
    # Under PAUSE ALL even CLIENT UNPAUSE waits, so the pause gets a length (6 socket timeouts) and
    # "thawing" means letting it run out.
    with server.admin() as admin:
        admin.execute_command("CLIENT", "PAUSE", int(SOCKET_TIMEOUT * 6000), "ALL")
    return lambda: None


def _client_pause_write(server: PrivateRedis) -> Callable[[], None]:
    # What a failover does. The store's read scripts carry ``no-writes`` and run during the pause once
    # Redis has them cached (tests/test_store_hardening.py); the read below meets its script for the
    # first time, and SCRIPT LOAD waits like a write. The 60 s length is only a safety net.
    with server.admin() as admin:
        admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")

    def thaw() -> None:
        with server.admin() as admin:
            admin.execute_command("CLIENT", "UNPAUSE")

    return thaw


@pytest.mark.parametrize(
    "freeze",
    [_sigstop, _client_pause_all, _client_pause_write],
    ids=["SIGSTOP", "CLIENT-PAUSE-ALL", "CLIENT-PAUSE-WRITE"],
)
def test_frozen_redis_times_out_then_every_acknowledged_message_is_kept_once(
    private_cache: PrivateRedis, freeze: Callable[[PrivateRedis], Callable[[], None]]
) -> None:
    """A frozen Redis still accepts connections and bytes but answers nothing: calls time out (after
    one socket timeout, not forever), the commands they sent may still run once Redis wakes up, and a
    client retrying with its idempotency key still ends up with each message exactly once."""
    server = private_cache
    store = get_store()
    stop = threading.Event()
    shared = store.create_session(owner="user:1")
    alone = store.create_session(owner="user:2")
    writers = [
        Writer(store, shared.id, "user:1", "a", stop),
        Writer(store, shared.id, "user:1", "b", stop),
        Writer(store, alone.id, "user:2", "c", stop),
    ]
    threads = run_writers(writers)
    thaw: Callable[[], None] = lambda: None  # noqa: E731
    try:
        wait_until(lambda: all(w.acked >= 10 for w in writers), "appends before the freeze")
        thaw = freeze(server)
        # While frozen, reads fail the same clear way.
        seconds, exc = timed(lambda: store.get_session(shared.id, owner="user:1"))
        assert isinstance(exc, StoreUnavailable)
        assert seconds < CALL_BOUND
        wait_until(lambda: all(w.failures for w in writers), "every writer to time out")
        frozen_at = [w.acked for w in writers]
        thaw()
        wait_until(
            lambda: all(w.acked >= n + 10 for w, n in zip(writers, frozen_at, strict=True)),
            "appends after the thaw",
        )
    finally:
        thaw()
        join_writers(writers, threads)
    assert_failures_clear_and_prompt(writers, redis.TimeoutError)
    assert_transcripts_exact(store, writers)
    assert half_written_sessions(server.admin(), store.keys.prefix) == []


def test_a_timed_out_write_may_still_land_and_a_keyed_retry_settles_it(private_cache: PrivateRedis) -> None:
    """StoreUnavailable after a timeout means "unknown", not "not written": the command was already in
    Redis's socket buffer and runs when Redis wakes up. Retrying with the same idempotency key returns
    that message instead of appending it twice."""
    server = private_cache
    store = get_store()
    session = store.create_session(owner="user:1")
    # (Also loads the append script: a frozen Redis would otherwise wake up to an unknown script.)
    store.append_message(session.id, role="user", content="first", owner="user:1")
    server.stop_signal()
    try:
        with pytest.raises(StoreUnavailable):
            store.append_message(session.id, role="user", content="late", owner="user:1", idempotency_key="k")
    finally:
        server.continue_signal()
    wait_until(lambda: store.count_messages(session.id, owner="user:1") == 2, "the buffered append to run")
    retried = store.append_message(
        session.id, role="user", content="late", owner="user:1", idempotency_key="k"
    )
    assert retried.id == 2
    assert [m.content for m in store.get_messages(session.id, owner="user:1")] == ["first", "late"]


# --------------------------------------------------------------------------- memory full


def _limit_memory(server: PrivateRedis, policy: str, headroom: int) -> redis.Redis:
    admin = server.admin()
    admin.config_set("maxmemory-policy", policy)
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + headroom)
    return admin


def fill_until_out_of_memory(store: ConversationStore, session_id: str, owner: str, size: int) -> int:
    """Append ``size``-character messages until Redis refuses one; returns how many it took."""
    acked = 0
    refusal: StoreOutOfMemory | None = None
    while refusal is None and acked < 10_000:
        try:
            store.append_message(session_id, role="user", content="f" * size, owner=owner)
        except StoreOutOfMemory as exc:
            refusal = exc
        else:
            acked += 1
    assert refusal is not None, "Redis never ran out of memory"
    assert isinstance(refusal, StoreUnavailable)  # the HTTP layer answers 503 for both
    assert isinstance(refusal.__cause__, redis.ResponseError)
    assert "maxmemory" in str(refusal)
    return acked


def test_full_memory_refuses_every_write_whole_and_keeps_reads(private_cache: PrivateRedis) -> None:
    server = private_cache
    store = get_store()
    big = store.create_session(owner="user:1", title="big")
    small = store.create_session(owner="user:1", title="small")
    store.append_message(small.id, role="user", content="hello", owner="user:1")
    admin = _limit_memory(server, "noeviction", 1_000_000)

    acked = fill_until_out_of_memory(store, big.id, "user:1", 4000)
    assert acked > 10

    keys_before = admin.dbsize()
    before = store.get_session_summary(small.id, owner="user:1")
    refused: dict[str, Callable[[], Any]] = {
        "append": lambda: store.append_message(small.id, role="user", content="y", owner="user:1"),
        "append with key": lambda: store.append_message(
            small.id, role="user", content="y", owner="user:1", idempotency_key="k1"
        ),
        "create": lambda: store.create_session(owner="user:1"),
        "create with key": lambda: store.create_session(owner="user:2", idempotency_key="k2"),
        "update": lambda: store.update_session(small.id, owner="user:1", title="changed"),
    }
    for name, write in refused.items():
        seconds, exc = timed(write)
        assert isinstance(exc, StoreOutOfMemory), (name, exc)
        assert seconds < CALL_BOUND

    # Nothing was half-done: the session reads exactly as before, no key appeared.
    assert admin.dbsize() == keys_before
    after = store.get_session(small.id, owner="user:1")
    assert after is not None
    assert (after.title, after.updated_at, [m.content for m in after.messages]) == (
        before.title,
        before.updated_at,
        ["hello"],
    )
    assert store.count_messages(big.id, owner="user:1") == acked
    assert {s.id for s in store.list_sessions(owner="user:1")} == {big.id, small.id}
    assert half_written_sessions(admin, store.keys.prefix) == []

    # Erasure still works when memory is full, and frees room: writes work again, no restart needed.
    assert store.delete_session(big.id, owner="user:1") is True
    message = store.append_message(small.id, role="user", content="again", owner="user:1")
    assert message.id == 2
    assert half_written_sessions(admin, store.keys.prefix) == []


def test_a_script_refused_for_memory_wrote_nothing(private_cache: PrivateRedis) -> None:
    """Redis checks maxmemory at a script's first write and never part-way through, so the append
    script is all or nothing. Proven on the keys: a refused append leaves count, messages, events and index
    score exactly as they were."""
    server = private_cache
    store = get_store()
    session = store.create_session(owner="user:1")
    store.append_message(session.id, role="user", content="first", owner="user:1")
    admin = _limit_memory(server, "noeviction", 200_000)
    filler = store.create_session(owner="user:3")
    fill_until_out_of_memory(store, filler.id, "user:3", 2000)
    meta, msgs, idem, events = store.keys.session_keys(session.id)
    index = store.keys.owner_index("user:1")

    def snapshot() -> tuple[Any, ...]:
        return (
            admin.hgetall(meta),
            admin.zrange(msgs, 0, -1),
            admin.exists(idem),
            admin.xlen(events),
            admin.zscore(index, session.id),
        )

    before = snapshot()
    for content in ("second", "third"):
        with pytest.raises(StoreOutOfMemory):
            store.append_message(
                session.id, role="user", content=content, owner="user:1", idempotency_key=content
            )
    assert snapshot() == before


# --------------------------------------------------------------------------- eviction


def test_a_session_that_lost_its_messages_reads_as_gone(store: ConversationStore) -> None:
    """What eviction can do to one session, done on purpose: its message list disappears while its meta
    stays. Reads, writes and listings then treat it as gone, as after an expiry, instead of showing a
    count with no messages or appending message 3 at list index 0."""
    session = store.create_session(owner="user:1")
    for content in ("a", "b"):
        store.append_message(session.id, role="user", content=content, owner="user:1")
    store.client.delete(store.keys.messages(session.id))
    assert store.get_session(session.id, owner="user:1") is None
    for attempt in (
        lambda: store.append_message(session.id, role="user", content="c", owner="user:1"),
        lambda: store.update_session(session.id, owner="user:1", title="t"),
        lambda: store.get_messages(session.id, owner="user:1", last=5),
        lambda: store.count_messages(session.id, owner="user:1"),
    ):
        with pytest.raises(SessionNotFound):
            attempt()
    assert store.client.exists(store.keys.messages(session.id)) == 0  # no list was started afresh
    assert store.list_sessions(owner="user:1") == []
    assert store.client.zcard(store.keys.owner_index("user:1")) == 0  # the listing pruned it
    store.delete_session(session.id, owner="user:1")
    assert store.client.exists(*store.keys.session_keys(session.id)) == 0  # and delete clears the rest


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_eviction_leaves_no_dangling_index_and_no_broken_session(
    private_cache: PrivateRedis, policy: str
) -> None:
    """An evicting Redis drops whole keys, so a session can lose its meta, its messages or its owner's
    index. Whatever is dropped, nothing a user can reach is inconsistent: after one listing no index
    entry points at a missing session, a session is either whole or gone, and appending to a survivor
    puts the message where windows find it."""
    server = private_cache
    store = get_store()
    admin = _limit_memory(server, policy, 2_500_000)
    admin.config_set("maxmemory-samples", "3")
    owners = ["user:1", "user:2", "user:3"]
    created: list[tuple[str, str]] = []
    for i in range(300):
        owner = owners[i % 3]
        session = store.create_session(owner=owner, title=str(i))
        created.append((session.id, owner))
        for _ in range(3):
            try:
                store.append_message(session.id, role="user", content="e" * 3000, owner=owner)
            except SessionNotFound:
                break  # this session's keys were already evicted
    assert int(admin.info("stats")["evicted_keys"]) > 50, "nothing was evicted: the test proved nothing"
    admin.config_set("maxmemory", 0)  # stop evicting, so what follows inspects a settled state

    listed = {owner: store.list_sessions(owner=owner) for owner in owners}
    for owner in owners:
        index = store.keys.owner_index(owner)
        for member in admin.zrange(index, 0, -1):
            assert admin.exists(store.keys.meta(member.decode())), "an index entry points at nothing"
        for summary in listed[owner]:
            session = store.get_session(summary.id, owner=owner)
            assert session is not None
            assert len(session.messages) == session.message_count

    for session_id, owner in created:
        session = store.get_session(session_id, owner=owner)
        if session is None:
            with pytest.raises(SessionNotFound):
                store.append_message(session_id, role="user", content="late", owner=owner)
            continue
        assert [m.id for m in session.messages] == list(range(1, session.message_count + 1))
        message = store.append_message(session_id, role="user", content="late", owner=owner)
        assert message.id == session.message_count + 1
        window = store.get_messages(session_id, owner=owner, after=session.message_count)
        assert [m.content for m in window] == ["late"]


# --------------------------------------------------------------------------- the same, over HTTP


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("faulty", password="pw")


@pytest.fixture
def api(private_cache: PrivateRedis, user: Any) -> Any:
    from rest_framework.test import APIClient

    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    return client


def assert_every_endpoint_is_a_prompt_503(api: Any, session_id: str) -> None:
    for method, path, body in endpoints(session_id):
        seconds, response = timed_response(lambda m=method, p=path, b=body: call(api, m, p, b))
        assert response.status_code == 503, (method, path, response.status_code, response.content[:200])
        assert int(response["Retry-After"]) > 0
        assert "unavailable" in response.json()["detail"]
        assert seconds < CALL_BOUND, (method, path, seconds)


def timed_response(send: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    response = send()
    return time.monotonic() - started, response


@pytest.mark.django_db
@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_http_answers_a_prompt_503_while_redis_is_out_then_recovers(
    private_cache: PrivateRedis, api: Any, outage: str
) -> None:
    server = private_cache
    session_id = api.post(SESSIONS, {"title": "before"}, format="json").json()["id"]
    assert (
        api.post(messages_url(session_id), {"role": "user", "content": "hi"}, format="json").status_code
        == 201
    )
    if outage == "killed":
        server.kill()
    else:
        server.stop_signal()
    assert_every_endpoint_is_a_prompt_503(api, session_id)
    if outage == "killed":
        server.restart()  # empty: the session did not survive (no persistence), the process does
        assert api.get(detail(session_id)).status_code == 404
    else:
        server.continue_signal()
        assert api.get(detail(session_id)).json()["message_count"] == 1
    created = api.post(SESSIONS, {"title": "after"}, format="json")
    assert created.status_code == 201
    new_id = created.json()["id"]
    assert (
        api.post(messages_url(new_id), {"role": "user", "content": "back"}, format="json").status_code == 201
    )
    assert half_written_sessions(server.admin(), get_store().keys.prefix) == []


@pytest.mark.django_db
def test_http_a_503_on_a_timed_out_append_is_settled_by_retrying_with_the_key(
    private_cache: PrivateRedis, api: Any
) -> None:
    session_id = api.post(SESSIONS, {"title": "retry"}, format="json").json()["id"]
    assert (
        api.post(messages_url(session_id), {"role": "user", "content": "hi"}, format="json").status_code
        == 201
    )
    body = {"role": "user", "content": "are you there?"}
    private_cache.stop_signal()
    try:
        first = api.post(messages_url(session_id), body, format="json", headers={"Idempotency-Key": "q1"})
    finally:
        private_cache.continue_signal()
    assert first.status_code == 503  # and yet the append runs once Redis wakes up:
    wait_until(lambda: api.get(detail(session_id)).json()["message_count"] == 2, "the buffered append")
    retry = api.post(messages_url(session_id), body, format="json", headers={"Idempotency-Key": "q1"})
    assert retry.status_code == 201
    assert retry.json()["id"] == 2
    session = api.get(detail(session_id)).json()
    assert [m["content"] for m in session["messages"]] == ["hi", "are you there?"]


@pytest.mark.django_db
def test_http_answers_503_when_redis_memory_is_full_and_still_reads(
    private_cache: PrivateRedis, api: Any, user: Any
) -> None:
    session_id = api.post(SESSIONS, {"title": "full"}, format="json").json()["id"]
    store = get_store()
    owner = f"user:{user.pk}"
    _limit_memory(private_cache, "noeviction", 300_000)
    fill_until_out_of_memory(store, session_id, owner, 2000)
    count = store.count_messages(session_id, owner=owner)
    for method, path, body in [
        ("post", messages_url(session_id), {"role": "user", "content": "one more"}),
        ("post", SESSIONS, {"title": "another"}),
        ("patch", detail(session_id), {"title": "renamed"}),
    ]:
        response = call(api, method, path, body)
        assert response.status_code == 503, (method, path, response.content[:200])
        assert int(response["Retry-After"]) > 0
    session = api.get(detail(session_id)).json()
    assert (session["title"], session["message_count"]) == ("full", count)
    assert api.get(SESSIONS).status_code == 200
    assert api.delete(detail(session_id)).status_code == 204  # erasure works, and frees memory
    assert api.post(SESSIONS, {"title": "room again"}, format="json").status_code == 201

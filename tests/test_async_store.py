"""The store's async twins (``a<name>``) on the real Redis: concurrency on one loop, several loops,
cancellation, a killed and a frozen Redis, signatures, signals, and no threads.

Each test runs its coroutines with plain ``asyncio.run`` (a fresh loop, as a worker, a management command
or ``async_to_sync`` would), so no pytest async plugin is involved. Failure tests use a private
redis-server (``private_cache``: 0.5 s socket timeouts); nothing here pauses or kills the shared Redis.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import redis

from conversations import signals
from conversations.exceptions import SessionNotFound, StoreUnavailable
from conversations.store import ConversationStore, Message, get_store
from tests.redis_server import PrivateRedis, half_written_sessions

pytestmark = pytest.mark.redis

T = TypeVar("T")

SOCKET_TIMEOUT = 0.5  # what the private_cache fixture configures
# A call may wait up to one socket timeout for a free pooled connection (all of them stuck on the frozen
# server) and then one more on its own command: two timeouts, plus a wide margin for a shared machine.
# A hang (the bug this guards against) would be unbounded.
CALL_BOUND = 2 * SOCKET_TIMEOUT + 2.5

# Sync methods whose twin would be pointless: no I/O (a channel name), or an operator tool of the sync
# import command. Anything else public must have an ``a`` twin.
NO_TWIN = {"events_channel", "write_layout_version"}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def every_async_call(
    store: ConversationStore, session_id: str, message_id: int, owner: str
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of every a-twin, aimed at an existing session whose message ``message_id`` is in progress
    (the session survives them all but the last two)."""
    return {
        "acreate_session": lambda: store.acreate_session(owner=owner, title="t"),
        "aget_session": lambda: store.aget_session(session_id, owner=owner),
        "asave_message": lambda: store.asave_message(session_id, role="user", content="s", owner=owner),
        "alist_sessions": lambda: store.alist_sessions(owner=owner),
        "alist_sessions_page": lambda: store.alist_sessions_page(owner=owner, limit=2),
        "aget_session_summary": lambda: store.aget_session_summary(session_id, owner=owner),
        "aget_session_head": lambda: store.aget_session_head(session_id, owner=owner, last=2),
        "acount_messages": lambda: store.acount_messages(session_id, owner=owner),
        "aupdate_session": lambda: store.aupdate_session(session_id, owner=owner, title="u"),
        "aappend_message": lambda: store.aappend_message(session_id, role="user", content="a", owner=owner),
        "aappend_messages": lambda: store.aappend_messages(
            session_id, [{"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}], owner=owner
        ),
        "aget_messages": lambda: store.aget_messages(session_id, owner=owner, last=3),
        "aget_message": lambda: store.aget_message(session_id, message_id, owner=owner),
        "aextend_message": lambda: store.aextend_message(session_id, message_id, "+", owner=owner),
        "aupdate_message": lambda: store.aupdate_message(session_id, message_id, owner=owner, data={"k": 1}),
        "aget_context": lambda: store.aget_context(session_id, max_tokens=100, owner=owner),
        "aevents_since": lambda: store.aevents_since(session_id, "0-0", owner=owner),
        "apop_message": lambda: store.apop_message(session_id, owner=owner),
        "adelete_message": lambda: store.adelete_message(session_id, 10**6, owner=owner),
        "atruncate_messages": lambda: store.atruncate_messages(session_id, after=message_id, owner=owner),
        "adelete_session": lambda: store.adelete_session(session_id, owner=owner),
        "adelete_owner_sessions": lambda: store.adelete_owner_sessions(owner),
    }


async def fresh_session(store: ConversationStore, owner: str) -> tuple[str, int]:
    session = await store.acreate_session(owner=owner)
    streaming = await store.aappend_message(
        session.id, role="assistant", content="", status="in_progress", owner=owner
    )
    return session.id, streaming.id


# --------------------------------------------------------------------------- concurrency, loops


def test_two_hundred_tasks_appending_to_one_session_keep_every_message_once_in_order(
    store: ConversationStore,
) -> None:
    """200 tasks x 10 appends on one loop: more concurrent calls than the loop's pool has connections
    (100), so some wait for one instead of failing."""

    async def main() -> tuple[list[Message], int, list[list[int]]]:
        session = await store.acreate_session(owner="user:1")
        acked: list[list[int]] = [[] for _ in range(200)]

        async def writer(n: int) -> None:
            for i in range(10):
                message = await store.aappend_message(
                    session.id, role="user", content=f"{n}:{i}", owner="user:1"
                )
                acked[n].append(message.id)

        await asyncio.gather(*(writer(n) for n in range(200)))
        messages = await store.aget_messages(session.id, owner="user:1", limit=5000)
        return messages, await store.acount_messages(session.id, owner="user:1"), acked

    messages, count, acked = run(main())
    assert count == len(messages) == 2000
    assert [m.id for m in messages] == list(range(1, 2001))
    contents = [m.content for m in messages]
    assert len(set(contents)) == 2000
    for n in range(200):
        mine = [c for c in contents if c.split(":")[0] == str(n)]
        assert mine == [f"{n}:{i}" for i in range(10)], n  # each task's own order kept
        assert acked[n] == sorted(acked[n])
    # The ids each call was told are exactly the ids its messages were stored under.
    by_id = {m.id: m.content for m in messages}
    assert all(by_id[mid].startswith(f"{n}:") for n in range(200) for mid in acked[n])


def test_asyncio_run_twice_and_a_thread_running_its_own_loop_all_work(store: ConversationStore) -> None:
    async def roundtrip(label: str) -> list[str]:
        session = await store.acreate_session(owner="user:1", title=label)
        await asyncio.gather(
            *(
                store.aappend_message(session.id, role="user", content=f"{label}{i}", owner="user:1")
                for i in range(20)
            )
        )
        return sorted(m.content for m in await store.aget_messages(session.id, owner="user:1", limit=100))

    expected = {label: sorted(f"{label}{i}" for i in range(20)) for label in ("a", "b", "t", "u")}
    assert run(roundtrip("a")) == expected["a"]
    assert run(roundtrip("b")) == expected["b"]  # a client bound to the first loop would fail here

    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    both_running = threading.Barrier(2, timeout=20)

    async def in_thread(label: str) -> None:
        await asyncio.to_thread(both_running.wait)  # both loops alive at once
        results[label] = await roundtrip(label)

    def thread_main(label: str) -> None:
        try:
            run(in_thread(label))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=thread_main, args=("t",))
    thread.start()
    thread_main("u")  # this thread's own loop, running while the other thread's is
    thread.join(30)
    assert errors == []
    assert results == {"t": expected["t"], "u": expected["u"]}


# --------------------------------------------------------------------------- cancellation


def test_a_cancellation_storm_leaves_whole_sessions_and_a_pool_that_reads_right(
    store: ConversationStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    """Hundreds of appends, extends, reads and truncates cancelled at random points (before sending,
    mid-send of a large argument, while the reply is on its way). Afterwards every session is whole,
    and the same loop's pool hands out no connection with a stale reply on it."""
    rng = random.Random(1234)
    owner = "user:storm"
    big = "x" * 30_000  # several of them take a while to send: cancellations land mid-write too

    async def main() -> dict[str, int]:
        sessions = [await fresh_session(store, owner) for _ in range(3)]
        outcomes = {"done": 0, "cancelled": 0}

        def call(k: int) -> Awaitable[Any]:
            session_id, streaming = sessions[k % len(sessions)]
            kind = k % 5
            if kind == 0:
                return store.aappend_message(
                    session_id, role="user", content=big if k % 2 else "m", owner=owner
                )
            if kind == 1:
                batch = [{"role": "user", "content": big if k % 2 else "p"} for _ in range(4)]
                return store.aappend_messages(session_id, batch, owner=owner)
            if kind == 2:
                return store.aextend_message(session_id, streaming, "e", owner=owner)
            if kind == 3:
                return store.aget_messages(session_id, owner=owner, last=20)
            return store.atruncate_messages(session_id, after=streaming + rng.randint(0, 30), owner=owner)

        async def one(k: int) -> None:
            try:
                # A third run to the end; the rest are cancelled after 0-30 ms, anywhere in the call.
                await asyncio.wait_for(call(k), timeout=None if k % 3 == 0 else rng.uniform(0, 0.03))
            except TimeoutError:
                outcomes["cancelled"] += 1
            else:
                outcomes["done"] += 1

        for _ in range(4):
            await asyncio.gather(*(one(k) for k in range(150)))

        # The pool still works and every reply belongs to its own call: 300 concurrent reads, each of
        # a different message of a fresh session, must each get exactly the message asked for.
        check = await store.acreate_session(owner=owner)
        made = await store.aappend_messages(
            check.id, [{"role": "user", "content": f"c{i}"} for i in range(300)], owner=owner
        )
        read = await asyncio.gather(*(store.aget_message(check.id, m.id, owner=owner) for m in made))
        assert [(m.id, m.content) for m in read] == [(m.id, f"c{i}") for i, m in enumerate(made)]
        counts = await asyncio.gather(*(store.acount_messages(s, owner=owner) for s, _ in sessions))
        for (session_id, _), count in zip(sessions, counts, strict=True):
            readable = await store.aget_messages(session_id, owner=owner, limit=10_000)
            assert count == len(readable), session_id
            assert [m.id for m in readable] == sorted(m.id for m in readable)
        return outcomes

    outcomes = run(main())
    # The storm was one: many calls were cancelled, and many completed.
    assert outcomes["cancelled"] >= 60, outcomes
    assert outcomes["done"] >= 60, outcomes
    assert half_written_sessions(redis_client, key_prefix) == []


# --------------------------------------------------------------------------- Redis killed / frozen


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await call()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_killed_redis_a_twins_fail_fast_and_recover_once_it_is_back(private_cache: PrivateRedis) -> None:
    server = private_cache
    store = get_store()

    async def main() -> None:
        session_id, streaming = await fresh_session(store, "user:1")
        server.kill()
        for name, call in every_async_call(store, session_id, streaming, "user:1").items():
            seconds, exc = await _timed(call)
            assert isinstance(exc, StoreUnavailable), (name, exc)
            assert isinstance(exc.__cause__, redis.ConnectionError), (name, exc.__cause__)
            assert seconds < CALL_BOUND, (name, seconds)
        # A burst larger than the pool, all failing the same clear way.
        burst = await asyncio.gather(
            *(_timed(lambda: store.aget_session(session_id, owner="user:1")) for _ in range(150))
        )
        assert all(isinstance(exc, StoreUnavailable) and seconds < CALL_BOUND for seconds, exc in burst)

        server.restart()  # same port, empty: the old session is gone, the store works on this loop
        with pytest.raises(SessionNotFound):
            await store.aappend_message(session_id, role="user", content="late", owner="user:1")
        again, _ = await fresh_session(store, "user:1")
        await store.aappend_messages(
            again, [{"role": "user", "content": str(i)} for i in range(3)], owner="user:1"
        )
        assert [m.content for m in await store.aget_messages(again, owner="user:1")] == ["", "0", "1", "2"]
        assert [s.id for s in await store.alist_sessions(owner="user:1")] == [again]

    run(main())
    assert half_written_sessions(server.admin(), store.keys.prefix) == []


def test_frozen_redis_a_twins_time_out_and_recover_when_it_wakes(private_cache: PrivateRedis) -> None:
    """SIGSTOP: the server accepts bytes and answers nothing. Every call (even 150 at once, more than
    the pool's connections) fails within the bound; once it wakes, the same loop's pool answers each
    call with its own reply (no connection left holding a late reply)."""
    server = private_cache
    store = get_store()

    async def main() -> None:
        session_id, streaming = await fresh_session(store, "user:1")
        # Load every script first: a frozen Redis would otherwise wake up to NOSCRIPT on some calls.
        for call in every_async_call(store, session_id, streaming, "user:1").values():
            await call()
        session_id, streaming = await fresh_session(store, "user:1")
        made = await store.aappend_messages(
            session_id, [{"role": "user", "content": f"m{i}"} for i in range(120)], owner="user:1"
        )
        server.stop_signal()
        try:
            for name, call in every_async_call(store, session_id, streaming, "user:1").items():
                if name in {"adelete_session", "adelete_owner_sessions", "atruncate_messages"}:
                    continue  # they would run on waking and leave nothing to check below
                seconds, exc = await _timed(call)
                assert isinstance(exc, StoreUnavailable), (name, exc)
                assert isinstance(exc.__cause__, redis.TimeoutError | redis.ConnectionError), (
                    name,
                    exc.__cause__,
                )
                assert seconds < CALL_BOUND, (name, seconds)
            burst = await asyncio.gather(
                *(
                    _timed(lambda m=m: store.aget_message(session_id, m.id, owner="user:1"))
                    for m in made[:150]
                )
            )
            assert all(isinstance(exc, StoreUnavailable) for _, exc in burst), burst
            assert max(seconds for seconds, _ in burst) < CALL_BOUND
        finally:
            server.continue_signal()
        read = await asyncio.gather(*(store.aget_message(session_id, m.id, owner="user:1") for m in made))
        assert [(m.id, m.content) for m in read] == [(m.id, f"m{i}") for i, m in enumerate(made)]
        count = await store.acount_messages(session_id, owner="user:1")
        assert count == len(await store.aget_messages(session_id, owner="user:1", limit=1000))

    run(main())
    assert half_written_sessions(server.admin(), store.keys.prefix) == []


# --------------------------------------------------------------------------- the API's shape


def _public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_every_public_method_has_a_coroutine_twin_with_the_same_signature() -> None:
    methods = _public_methods(ConversationStore)
    sync_names = {name for name in methods if not inspect.iscoroutinefunction(methods[name])}
    twins = {name for name in methods if inspect.iscoroutinefunction(methods[name])}
    assert sync_names >= NO_TWIN
    wanted = sync_names - NO_TWIN
    assert {f"a{name}" for name in wanted} == twins
    for name in sorted(wanted):
        sync_sig = inspect.signature(methods[name])
        async_sig = inspect.signature(methods[f"a{name}"])
        assert async_sig == sync_sig, (name, str(sync_sig), str(async_sig))
    assert len(wanted) >= 20  # the whole API, not an empty comparison


def test_get_store_from_async_code_does_no_io(key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_store()`` builds or reuses a store without touching the network, so an async view may call
    it on the loop; the network is refused while it runs, then the store it gave works."""
    from conversations import store as store_module

    monkeypatch.setattr(store_module, "_stores", {})
    opened: list[Any] = []
    real_socket = socket.socket

    class NoSocket(real_socket):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            opened.append(args)
            raise AssertionError("get_store() opened a socket")

    async def main() -> ConversationStore:
        with monkeypatch.context() as patch:
            patch.setattr(socket, "socket", NoSocket)
            store = get_store()
            assert get_store() is store
        session = await store.acreate_session(owner="user:1")
        assert (await store.aget_session_summary(session.id, owner="user:1")).id == session.id
        return store

    run(main())
    assert opened == []


# --------------------------------------------------------------------------- no threads, signals


def test_the_a_twins_start_no_thread_and_use_no_executor(
    store: ConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every a-method runs on the loop's own thread: no thread started, no executor, no sync_to_async.
    (Only async signal receivers are connected: Django runs a sync receiver of ``asend`` through
    ``sync_to_async``, its own choice.)"""
    import asgiref.sync

    started: list[str] = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name))
    monkeypatch.setattr(
        asyncio.BaseEventLoop, "run_in_executor", lambda *args, **kwargs: started.append("executor")
    )
    real_sync_to_async = asgiref.sync.SyncToAsync.__call__

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        started.append("sync_to_async")
        return await real_sync_to_async(self, *args, **kwargs)

    monkeypatch.setattr(asgiref.sync.SyncToAsync, "__call__", counted)
    heard: list[str] = []

    async def receiver(sender: Any, **kwargs: Any) -> None:
        heard.append(kwargs.get("session_id") or kwargs["session"].id)

    watched = [signals.session_created, signals.message_appended, signals.message_updated]
    watched += [signals.messages_removed, signals.session_deleted]
    for signal in watched:
        signal.connect(receiver, weak=False)
    threads_before = threading.active_count()

    async def main() -> list[str]:
        session_id, streaming = await fresh_session(store, "user:1")
        names = []
        for name, call in every_async_call(store, session_id, streaming, "user:1").items():
            await call()
            names.append(name)
        return names

    try:
        names = run(main())
    finally:
        for signal in watched:
            signal.disconnect(receiver)
    assert len(names) == len(every_async_call(store, "x", 1, "o"))
    assert started == []
    assert threading.active_count() == threads_before
    assert len(heard) >= 10  # the receivers ran, on the loop


def test_message_appended_runs_coroutine_and_sync_receivers_on_the_async_path(
    store: ConversationStore,
) -> None:
    seen: list[tuple[str, int, str | None, bool]] = []
    loop_of_receiver: list[asyncio.AbstractEventLoop] = []

    async def coroutine_receiver(
        sender: Any, session_id: str, message: Message, owner: str | None, **kw: Any
    ) -> None:
        loop_of_receiver.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        seen.append(("async", message.id, owner, sender is ConversationStore))

    def sync_receiver(sender: Any, session_id: str, message: Message, owner: str | None, **kw: Any) -> None:
        seen.append(("sync", message.id, owner, sender is ConversationStore))

    signals.message_appended.connect(coroutine_receiver, weak=False)
    signals.message_appended.connect(sync_receiver, weak=False)

    async def main() -> tuple[asyncio.AbstractEventLoop, list[int]]:
        session = await store.acreate_session(owner="user:1")
        one = await store.aappend_message(session.id, role="user", content="hi", owner="user:1")
        more = await store.aappend_messages(
            session.id, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], owner="user:1"
        )
        return asyncio.get_running_loop(), [one.id, *(m.id for m in more)]

    try:
        loop, ids = run(main())
    finally:
        signals.message_appended.disconnect(coroutine_receiver)
        signals.message_appended.disconnect(sync_receiver)
    # Both kinds ran for every message, before the call returned, with the store as sender.
    assert sorted(e for e in seen if e[0] == "async") == [("async", i, "user:1", True) for i in ids]
    assert sorted(e for e in seen if e[0] == "sync") == [("sync", i, "user:1", True) for i in ids]
    assert len(loop_of_receiver) == len(ids)
    assert all(rl is loop for rl in loop_of_receiver)  # awaited on the caller's own loop

"""Store benchmarks: the app's store and the seed baseline on the same workloads, beside GET round trips.

Fills go as fast as they can (pipelines, whole blobs); only the measured operation goes through the
store's public API (or the seed baseline's). Every key lives under the run's own prefix.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from conversations.store import ConversationStore, StoreConfig
from conversations.store import scripts as store_scripts

from .seed_baseline import SeedMessage, SeedSession, SeedStore
from .timing import Op, Timing, interleaved, throughputs

OWNER = "user:1"
ROLES = ("user", "assistant")


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``Sizes.smoke()`` is the tiny variant the test suite runs."""

    append_at: tuple[int, ...] = (10, 2_000, 10_000)
    read_at: tuple[int, ...] = (2_000, 10_000)
    read_last: int = 20
    listing_totals: tuple[int, ...] = (1_000, 100_000)
    listing_owner_sessions: int = 100
    listing_page: int = 20
    memory_messages: int = 1_000
    content_chars: int = 200
    reps: int = 500
    rounds: int = 11
    seed_rounds: int = 5
    # The seed's cost grows with the history: its big workloads get fewer repetitions.
    seed_work_per_round: int = 200_000
    cycle_appends: int = 10
    chat_answer_chars: int = 1_000
    cycle_read: int = 10
    cycle_batch: int = 100
    cycle_rounds: int = 9
    processes: int = 8
    process_seconds: float = 3.0
    lifecycle_at: tuple[int, ...] = (10, 5_000)
    full_listing_sessions: int = 20_000
    report_sessions: int = 50_000
    http_fill: int = 100
    http_reps: int = 300
    http_rounds: int = 5

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(
            append_at=(3, 12),
            read_at=(12, 25),
            read_last=5,
            listing_totals=(12, 40),
            listing_owner_sessions=6,
            listing_page=3,
            memory_messages=10,
            content_chars=20,
            reps=5,
            rounds=1,
            seed_rounds=1,
            seed_work_per_round=50,
            cycle_appends=2,
            chat_answer_chars=40,
            cycle_read=2,
            cycle_batch=3,
            cycle_rounds=1,
            processes=2,
            process_seconds=0.3,
            lifecycle_at=(4, 12),
            full_listing_sessions=30,
            report_sessions=300,
            http_fill=21,
            http_reps=3,
            http_rounds=1,
        )


@dataclass
class Bench:
    """What every benchmark of one run shares."""

    client: Any
    store: ConversationStore
    seed: SeedStore
    prefix: str
    sizes: Sizes
    ref: Callable[[], object]

    def text(self, i: int = 0) -> str:
        """A message body of ``content_chars`` characters (varied a little, like real chat)."""
        head = f"message {i}: "
        return (head + "lorem ipsum dolor sit amet " * (self.sizes.content_chars // 27 + 1))[
            : self.sizes.content_chars
        ]

    def seed_reps(self, history: int) -> int:
        return max(1, min(self.sizes.reps, self.sizes.seed_work_per_round // max(1, history)))


# ---------------------------------------------------------------------------------------------- fills


def fill_app_session(bench: Bench, messages: int) -> str:
    store = bench.store
    session = store.create_session(owner=OWNER, title="bench")
    for i in range(messages):
        store.append_message(session.id, role=ROLES[i % 2], content=bench.text(i), owner=OWNER)
    return session.id


def fill_seed_session(bench: Bench, messages: int) -> str:
    """A seed session holding ``messages`` messages, written as one blob (as the seed would hold it)."""
    now = int(time.time())
    session = SeedSession(session_id=bench.seed.create_session().session_id, created_at=now, updated_at=now)
    session.messages = [
        SeedMessage(role=ROLES[i % 2], content=bench.text(i), timestamp=now) for i in range(messages)
    ]
    bench.seed.client.set(bench.seed.key(session.session_id), bench.seed.dumps(session), ex=bench.seed.ttl)
    return session.session_id


def app_undo_append(bench: Bench, session_id: str, length: int) -> Callable[[], object]:
    """Put a session back to ``length`` messages after a timed append, so every append is the same one."""
    keys = bench.store.keys
    meta, msgs = keys.meta(session_id), keys.messages(session_id)

    def undo() -> None:
        pipe = bench.client.pipeline(transaction=True)
        pipe.zpopmax(msgs)
        pipe.hset(meta, mapping={"count": length, "seq": length})
        pipe.execute()

    return undo


# ---------------------------------------------------------------------------------------------- workloads


def bench_reference(bench: Bench) -> dict[str, Timing]:
    """The yardsticks: a GET and a PING round trip, each beside GET."""
    client = bench.client
    return interleaved(
        {"GET": Op(bench.ref), "PING": Op(client.ping)},
        bench.ref,
        reps=bench.sizes.reps,
        rounds=bench.sizes.rounds,
    )


def bench_append(bench: Bench) -> tuple[dict[int, Timing], dict[int, Timing]]:
    """Append message N (N-1 already stored), for each N of ``append_at``: the app, then the seed."""
    app_ops: dict[int, Op] = {}
    for n in bench.sizes.append_at:
        session_id = fill_app_session(bench, n - 1)
        text = bench.text(n)

        def append(session_id: str = session_id, text: str = text) -> None:
            bench.store.append_message(session_id, role="user", content=text, owner=OWNER)

        app_ops[n] = Op(append, app_undo_append(bench, session_id, n - 1))
    app = interleaved(
        {str(n): op for n, op in app_ops.items()}, bench.ref, reps=bench.sizes.reps, rounds=bench.sizes.rounds
    )
    seed: dict[int, Timing] = {}
    for n in bench.sizes.append_at:
        session_id = fill_seed_session(bench, n - 1)
        key = bench.seed.key(session_id)
        blob = bench.client.get(key)
        text = bench.text(n)

        def seed_append(session_id: str = session_id, text: str = text) -> None:
            bench.seed.save_message(session_id, role="user", content=text)

        def seed_undo(key: str = key, blob: bytes = blob) -> None:
            bench.client.set(key, blob, ex=bench.seed.ttl)

        seed[n] = interleaved(
            {"seed": Op(seed_append, seed_undo)},
            bench.ref,
            reps=bench.seed_reps(n),
            rounds=bench.sizes.seed_rounds,
        )["seed"]
    return {int(n): t for n, t in app.items()}, seed


def bench_read_last(bench: Bench) -> tuple[dict[int, Timing], dict[int, Timing]]:
    """The newest ``read_last`` messages of a session holding N, for each N of ``read_at``."""
    last = bench.sizes.read_last
    app_ops: dict[str, Op] = {}
    for n in bench.sizes.read_at:
        session_id = fill_app_session(bench, n)
        got = bench.store.get_messages(session_id, owner=OWNER, last=last)
        assert [m.id for m in got] == list(range(n - last + 1, n + 1)), "the bench read the wrong window"

        def read(session_id: str = session_id) -> None:
            bench.store.get_messages(session_id, owner=OWNER, last=last)

        app_ops[str(n)] = Op(read)
    app = interleaved(app_ops, bench.ref, reps=bench.sizes.reps, rounds=bench.sizes.rounds)
    seed: dict[int, Timing] = {}
    for n in bench.sizes.read_at:
        session_id = fill_seed_session(bench, n)

        def seed_read(session_id: str = session_id) -> None:
            session = bench.seed.get_session(session_id)
            assert session is not None
            session.messages[-last:]

        seed[n] = interleaved(
            {"seed": Op(seed_read)}, bench.ref, reps=bench.seed_reps(n), rounds=bench.sizes.seed_rounds
        )["seed"]
    return {int(n): t for n, t in app.items()}, seed


FILLERS_PER_OWNER = 20


def _filler(i: int) -> tuple[str, str, str]:
    """The owner, app session id and seed session id of filler session number ``i``."""
    return f"user:filler-{i // FILLERS_PER_OWNER}", f"bench{i:017d}", f"f{i:07x}"


def _fill_sessions(bench: Bench, start: int, stop: int) -> None:
    """Empty sessions number ``start``..``stop - 1`` of other owners, through the store's own create
    script, pipelined; and as many seed sessions."""
    client, keys, cfg = bench.client, bench.store.keys, bench.store.config
    create = client.register_script(store_scripts.CREATE.source)
    ttl_ms = cfg.session_ttl * 1000
    pipe = client.pipeline(transaction=False)
    seed_now = int(time.time())
    for i in range(start, stop):
        owner, session_id, seed_id = _filler(i)
        create(
            keys=[keys.meta(session_id), keys.owner_index(owner)],
            args=[owner, "", b"{}", ttl_ms, session_id, ""],
            client=pipe,
        )
        seed_session = SeedSession(session_id=seed_id, created_at=seed_now, updated_at=seed_now)
        pipe.set(bench.seed.key(seed_id), bench.seed.dumps(seed_session), ex=bench.seed.ttl)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def _drop_sessions(bench: Bench, start: int, stop: int) -> None:
    """Delete the filler sessions ``_fill_sessions(bench, start, stop)`` made (``start`` a multiple of
    ``FILLERS_PER_OWNER``, so their owners hold no other session)."""
    keys = bench.store.keys
    names: list[str] = []
    for i in range(start, stop):
        owner, session_id, seed_id = _filler(i)
        names += [keys.meta(session_id), bench.seed.key(seed_id)]
        if i % FILLERS_PER_OWNER == 0:
            names.append(keys.owner_index(owner))
    for at in range(0, len(names), 1000):
        bench.client.unlink(*names[at : at + 1000])


def bench_listing(bench: Bench) -> tuple[dict[int, Timing], dict[int, Timing]]:
    """One owner's newest page of sessions when Redis holds ``small`` and ``big`` sessions in all
    (``listing_totals``).

    Measured small-big-small (the big total's fillers deleted again), so a change in the shared
    machine's load during the run weighs on both sides of the growth ratio."""
    sizes = bench.sizes
    small, big = sizes.listing_totals
    for _ in range(sizes.listing_owner_sessions):
        bench.store.create_session(owner=OWNER, metadata={"topic": "bench"})
        bench.seed.create_session()
    # Filler numbers: the big total's start at a multiple of FILLERS_PER_OWNER (see _drop_sessions).
    big_from = -(-small // FILLERS_PER_OWNER) * FILLERS_PER_OWNER
    big_to = big_from + big - small

    def page() -> None:
        bench.store.list_sessions_page(owner=OWNER, limit=sizes.listing_page)

    def seed_page() -> None:
        sessions = bench.seed.list_sessions()
        sorted(sessions, key=lambda s: s["updated_at"], reverse=True)[: sizes.listing_page]

    def measure_app() -> Timing:
        got = bench.store.list_sessions_page(owner=OWNER, limit=sizes.listing_page)
        assert len(got.sessions) == sizes.listing_page, "the listing bench saw the wrong page"
        return interleaved({"app": Op(page)}, bench.ref, reps=sizes.reps, rounds=sizes.rounds)["app"]

    def measure_seed(total: int) -> Timing:
        # KEYS plus a GET per session: seconds at 100,000 sessions, and KEYS blocks the (shared) Redis
        # while it walks every key, so a big total gets one call, no warm-up.
        few = total > 10_000
        return interleaved(
            {"seed": Op(seed_page)},
            bench.ref,
            reps=max(1, sizes.seed_work_per_round // 20 // total),
            rounds=1 if few else min(sizes.seed_rounds, 3),
            warmup=0 if few else 20,
        )["seed"]

    _fill_sessions(bench, 0, small - sizes.listing_owner_sessions)
    app, seed = {small: measure_app()}, {small: measure_seed(small)}
    _fill_sessions(bench, big_from, big_to)
    app[big], seed[big] = measure_app(), measure_seed(big)
    _drop_sessions(bench, big_from, big_to)
    again = measure_app()
    first = app[small]
    app[small] = Timing(
        op_us=min(first.op_us, again.op_us),
        ref_us=min(first.ref_us, again.ref_us),
        rounds=first.rounds + again.rounds,
    )
    return app, seed


@dataclass
class Memory:
    app_bytes_per_message: float
    app_info_delta_per_message: float
    seed_bytes_per_message: float


def bench_memory(bench: Bench) -> Memory:
    """Redis memory per message for ``memory_messages`` messages: MEMORY USAGE of the session's keys,
    and the INFO used_memory delta (noisier: the Redis is shared)."""
    n = bench.sizes.memory_messages
    client = bench.client
    before = int(client.info("memory")["used_memory"])
    session_id = fill_app_session(bench, n)
    after = int(client.info("memory")["used_memory"])
    keys = bench.store.keys
    app_bytes = sum(
        int(client.memory_usage(key, samples=0) or 0)
        for key in (keys.meta(session_id), keys.messages(session_id))
    )
    seed_id = fill_seed_session(bench, n)
    seed_bytes = int(client.memory_usage(bench.seed.key(seed_id), samples=0) or 0)
    return Memory(app_bytes / n, (after - before) / n, seed_bytes / n)


# ---------------------------------------------------------------------------------------------- cycles


# One appended message of a cycle: role, content, sources.
Turn = tuple[str, str, list[dict[str, Any]] | None]


def uniform_turns(bench: Bench) -> list[Turn]:
    """The cycle's messages at the run's message size, user and assistant taking turns."""
    return [(ROLES[i % 2], bench.text(i), None) for i in range(bench.sizes.cycle_appends)]


def chat_turns(bench: Bench) -> list[Turn]:
    """A chat's messages: short questions, longer answers citing two sources (a RAG assistant's)."""
    sizes = bench.sizes
    answer = (bench.text(1) * (sizes.chat_answer_chars // max(1, sizes.content_chars) + 1))[
        : sizes.chat_answer_chars
    ]
    sources = [{"url": f"https://docs.example.com/guide/{n}", "title": f"Guide, part {n}"} for n in (1, 2)]
    return [
        ("user", bench.text(i), None) if i % 2 == 0 else ("assistant", answer, sources)
        for i in range(sizes.cycle_appends)
    ]


def app_cycles(store: ConversationStore, sizes: Sizes, turns: list[Turn]) -> Callable[[int], None]:
    last = sizes.cycle_read

    def run(cycles: int) -> None:
        for _ in range(cycles):
            session = store.create_session(owner=OWNER)
            for role, content, sources in turns:
                store.append_message(session.id, role=role, content=content, sources=sources, owner=OWNER)
            store.get_messages(session.id, owner=OWNER, last=last)

    return run


def seed_cycles(seed: SeedStore, sizes: Sizes, turns: list[Turn]) -> Callable[[int], None]:
    last = sizes.cycle_read

    def run(cycles: int) -> None:
        for _ in range(cycles):
            session = seed.create_session()
            for role, content, sources in turns:
                seed.save_message(session.session_id, role=role, content=content, sources=sources)
            found = seed.get_session(session.session_id)
            assert found is not None
            found.messages[-last:]

    return run


def bench_cycle(bench: Bench) -> dict[str, float]:
    """Cycles per second, one client: create + appends + read the last few, with messages of the run's
    size and with a chat's mix; the four workloads take turns."""
    sizes, uniform, chat = bench.sizes, uniform_turns(bench), chat_turns(bench)
    return throughputs(
        {
            "app": app_cycles(bench.store, sizes, uniform),
            "seed": seed_cycles(bench.seed, sizes, uniform),
            "app chat": app_cycles(bench.store, sizes, chat),
            "seed chat": seed_cycles(bench.seed, sizes, chat),
        },
        batch=sizes.cycle_batch,
        rounds=sizes.cycle_rounds,
    )


def _cycle_worker(
    kind: str,
    connection_kwargs: dict[str, Any],
    config: StoreConfig,
    seed_prefix: str,
    sizes: Sizes,
    turns: list[Turn],
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One process of the multi-process cycle: its own client, cycles for ``process_seconds``."""
    client = redis.Redis(connection_pool=redis.ConnectionPool(**connection_kwargs))
    if kind == "app":
        run = app_cycles(ConversationStore(client, config), sizes, turns)
    else:
        run = seed_cycles(SeedStore(client, prefix=seed_prefix, ttl=config.session_ttl), sizes, turns)
    run(1)  # connect and load the scripts before the clock starts
    ready.wait()
    go.wait()
    deadline = time.perf_counter() + sizes.process_seconds
    done = 0
    while time.perf_counter() < deadline:
        run(1)
        done += 1
    results.put(done)
    client.close()


def bench_cycle_processes(bench: Bench) -> dict[str, float]:
    """Cycles per second summed over ``processes`` processes (spawned, each with its own client)."""
    ctx = multiprocessing.get_context("spawn")
    sizes = bench.sizes
    # The parent client's connection settings (same server, parser, timeouts), minus its live objects.
    wanted = ("host", "port", "db", "username", "password", "path", "parser_class")
    wanted += ("socket_timeout", "socket_connect_timeout")
    kwargs = {k: v for k, v in bench.client.connection_pool.connection_kwargs.items() if k in wanted}
    kwargs["connection_class"] = bench.client.connection_pool.connection_class
    rates: dict[str, float] = {}
    for kind in ("app", "seed"):
        ready = ctx.Barrier(sizes.processes + 1)
        go = ctx.Event()
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=_cycle_worker,
                args=(
                    kind,
                    kwargs,
                    bench.store.config,
                    bench.seed.prefix,
                    sizes,
                    uniform_turns(bench),
                    ready,
                    go,
                    results,
                ),
            )
            for _ in range(sizes.processes)
        ]
        for proc in procs:
            proc.start()
        ready.wait(timeout=120)
        go.set()
        counts = [results.get(timeout=sizes.process_seconds + 120) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        rates[kind] = sum(counts) / sizes.process_seconds
    return rates


def bench_full_listing(bench: Bench) -> Timing:
    """``list_sessions`` of one owner's ``full_listing_sessions`` sessions (10 messages each) beside a
    bare ``SCAN MATCH <meta pattern> COUNT 1000`` walking their meta keys, the two taking turns."""
    from .report_scale import fill

    n = bench.sizes.full_listing_sessions
    owner = "user:lister"
    seconds, micros = bench.client.time()
    fill(
        bench.client,
        bench.store.keys,
        n,
        int(seconds) * 1000 + int(micros) // 1000,
        bench.store.ttl_ms,
        owner=owner,
        mixed=False,
    )
    pattern = bench.store.keys.meta_pattern()
    client = bench.client

    def scan() -> int:
        return sum(1 for _ in client.scan_iter(match=pattern, count=1000))

    assert len(bench.store.list_sessions(owner=owner)) == n, "the listing bench listed the wrong sessions"
    rounds = max(3, bench.sizes.rounds)
    return interleaved(
        {"list": Op(lambda: bench.store.list_sessions(owner=owner))}, scan, reps=3, rounds=rounds, warmup=1
    )["list"]

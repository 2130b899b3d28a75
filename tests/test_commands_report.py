"""``manage.py conversations_report``: figures checked against known data on the real Redis, drift
found and repaired, corrupt keys counted, machine-readable output, and a streaming pass whose memory
does not grow with the number of sessions."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import tracemalloc
from collections.abc import Iterator
from datetime import datetime
from io import StringIO
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError

from conversations.exceptions import InvalidInput
from conversations.operations.durations import format_duration, parse_duration
from conversations.operations.report import ReportOptions, build_report
from conversations.operations.scanning import prefetched, server_time_ms
from conversations.operations.stats import Distribution, HeavyHitters, TopN
from conversations.store import ConversationStore

from .factories import put_session, put_sessions_bulk, session_id

MINUTE = 60_000


def report(*args: str, **options: Any) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("conversations_report", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def report_json(**options: Any) -> dict[str, Any]:
    out, _ = report(format="json", **options)
    data: dict[str, Any] = json.loads(out)
    return data


def nearest_rank(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def report_now_ms(data: dict[str, Any]) -> int:
    return round(datetime.fromisoformat(data["generated_at"]).timestamp() * 1000)


# ---------------------------------------------------------------------- pure units (no Redis)


def test_durations_accept_plain_seconds_and_units() -> None:
    assert [parse_duration(v) for v in ("90", "90s", "15m", "2h", "1d", "1w", " 3H ")] == [
        90,
        90,
        900,
        7200,
        86_400,
        604_800,
        10_800,
    ]
    for bad in ("", "0", "-5", "1.5h", "2 hours", "h", "5y", "99999999999d", True):
        with pytest.raises(InvalidInput):
            parse_duration(bad)
    assert [format_duration(s) for s in (5, 125, 7300, 200_000)] == ["5s", "2m 05s", "2h 01m", "2d 07h"]


def test_distribution_percentiles_are_within_their_documented_precision() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(10, 2)) for _ in range(20_000)] + [0, 1, 127, 128]
    dist = Distribution()
    for value in values:
        dist.add(value)
    assert (dist.count, dist.minimum, dist.maximum, dist.total) == (
        len(values),
        min(values),
        max(values),
        sum(values),
    )
    for fraction in (0.5, 0.95):
        exact = nearest_rank(values, fraction)
        assert abs(dist.percentile(fraction) - exact) <= exact / 128 + 1  # type: ignore[operator]
    # Small values are exact, and the memory is bounded whatever the number of values.
    small = Distribution()
    for value in [3, 1, 2, 5, 4]:
        small.add(value)
    assert (small.percentile(0.5), small.percentile(0.95)) == (3, 5)
    assert dist.bucket_count < 4096


def test_heavy_hitters_are_exact_below_capacity_and_bounded_above() -> None:
    exact: HeavyHitters[str] = HeavyHitters(capacity=10)
    for item in ["a"] * 5 + ["b"] * 3 + ["c"]:
        exact.add(item)
    assert exact.exact
    assert exact.most_common(2) == [("a", 5, 0), ("b", 3, 0)]

    rng = random.Random(3)
    stream = ["hot"] * 3000 + ["warm"] * 1500 + [f"cold{rng.randrange(50_000)}" for _ in range(20_000)]
    rng.shuffle(stream)
    hitters: HeavyHitters[str] = HeavyHitters(capacity=100)
    for item in stream:
        hitters.add(item)
    assert len(hitters) == 100  # the memory bound
    assert not hitters.exact
    top = hitters.most_common(2)
    assert [name for name, _, _ in top] == ["hot", "warm"]
    for name, count, error in top:
        true = stream.count(name)
        assert count - error <= true <= count


def test_prefetched_yields_in_order_raises_errors_and_stops_early() -> None:
    produced: list[int] = []

    def numbers(stop: int, fail_at: int | None = None) -> Iterator[int]:
        for n in range(stop):
            if n == fail_at:
                raise redis.ConnectionError("lost")
            produced.append(n)
            yield n

    assert list(prefetched(numbers(50))) == list(range(50))
    failing = prefetched(numbers(10, fail_at=5))
    assert [next(failing) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(redis.ConnectionError, match="lost"):
        next(failing)
    produced.clear()
    walk = prefetched(numbers(1000))
    assert next(walk) == 0
    walk.close()  # the caller stops: the thread ends, at most two items ahead
    assert len(produced) <= 3


def test_top_n_keeps_the_largest() -> None:
    top: TopN[str] = TopN(3)
    for score, key in [(5, "e"), (1, "a"), (9, "i"), (7, "g"), (3, "c")]:
        top.add(score, key)
    assert [(s, k) for s, k, _ in top.largest()] == [(9, "i"), (7, "g"), (5, "e")]


# ---------------------------------------------------------------------- option errors


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "xml"}, "--format"),
        ({"idle_longer_than": "5 parsecs"}, "duration"),
        ({"idle_longer_than": "0"}, "longer than zero"),
        ({"top": "0"}, "--top"),
        ({"top": "many"}, "--top"),
        ({"memory_sample": "-1"}, "--memory-sample"),
        ({"owner": "x" * 300}, "owner"),
    ],
)
def test_bad_options_are_command_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        report(**options)


def test_unreachable_redis_is_a_command_error(settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "CACHE_ALIAS": "unreachable"}
    with pytest.raises(CommandError, match="Cannot reach Redis"):
        report()


# ---------------------------------------------------------------------- figures on the real Redis


@pytest.fixture
def known(store: ConversationStore, redis_client: redis.Redis) -> dict[str, Any]:
    """20 sessions with 0..19 messages: owners user:a (10), user:b (6) and unowned (4); idle
    10 x i seconds, age i+1 minutes, TTL 100+i seconds. Sessions 3 and 12 are missing from their index;
    user:a's index holds 4 stale entries (two gone, one not an id, one of user:b's sessions)."""
    now = server_time_ms(redis_client)
    pipe = redis_client.pipeline(transaction=False)
    rows = []
    for i in range(20):
        owner = "user:a" if i < 10 else "user:b" if i < 16 else ""
        created, updated = now - (i + 1) * MINUTE, now - i * 10_000
        sid = put_session(
            pipe,
            store.keys,
            owner=owner,
            created_at=created,
            updated_at=updated,
            messages=i,
            ttl_ms=(100 + i) * 1000,
            indexed=i not in (3, 12),
        )
        rows.append({"id": sid, "owner": owner, "created": created, "updated": updated, "messages": i})
    stale = [session_id(), session_id(), "not-an-id", rows[11]["id"]]
    pipe.zadd(store.keys.owner_index("user:a"), dict.fromkeys(stale, now - 5000))
    pipe.execute()
    return {"rows": rows, "stale": stale, "missing": [rows[3]["id"], rows[12]["id"]]}


@pytest.mark.redis
def test_report_figures_match_a_known_data_set(known: dict[str, Any]) -> None:
    rows = known["rows"]
    data = report_json(memory_sample=1, top=3)
    now = report_now_ms(data)
    assert data["sessions"] == 20
    assert data["messages"] == sum(range(20))
    assert data["messages_per_session"] == {"min": 0, "median": 9, "p95": 18, "max": 19, "mean": 9.5}
    for name, field in (("idle_seconds", "updated"), ("age_seconds", "created")):
        values = [now - row[field] for row in rows]
        stats = data[name]
        assert stats["min"] == pytest.approx(min(values) / 1000, abs=0.002)
        assert stats["max"] == pytest.approx(max(values) / 1000, abs=0.002)
        for key, fraction in (("median", 0.5), ("p95", 0.95)):
            assert stats[key] == pytest.approx(nearest_rank(values, fraction) / 1000, rel=0.01, abs=0.002)
    assert 90 < data["ttl_seconds"]["min"] <= 100
    assert 109 < data["ttl_seconds"]["max"] <= 119

    assert [(s["messages"], s["id"]) for s in data["largest_sessions"]] == [
        (19, rows[19]["id"]),
        (18, rows[18]["id"]),
        (17, rows[17]["id"]),
    ]
    assert data["largest_sessions"][0]["owner"] is None
    assert all(s["memory_bytes"] > 0 for s in data["largest_sessions"])
    assert data["top_owners"]["exact"] is True
    assert [(o["owner"], o["sessions"]) for o in data["top_owners"]["owners"]] == [
        ("user:a", 10),
        ("user:b", 6),
        (None, 4),
    ]
    memory = data["memory"]
    assert memory["sampled_sessions"] == 20
    assert memory["estimated_sessions_bytes"] == memory["sampled_bytes"] > 20 * 100
    assert memory["index_bytes"] > 0
    assert data["corrupt"]["total"] == 0

    drift = data["index_drift"]
    assert (drift["owner_indexes"], drift["index_entries"]) == (3, 9 + 4 + 5 + 4)
    assert (drift["stale_entries"], drift["missing_entries"]) == (4, 2)
    assert {e["session_id"] for e in drift["examples"] if e["kind"] == "stale"} == set(known["stale"])
    assert {e["session_id"] for e in drift["examples"] if e["kind"] == "missing"} == set(known["missing"])


@pytest.mark.redis
def test_sampled_memory_is_extrapolated_to_every_session(known: dict[str, Any]) -> None:
    memory = report_json(memory_sample=10)["memory"]
    assert memory["sampled_sessions"] == 2
    assert memory["estimated_sessions_bytes"] == round(memory["sampled_bytes"] / 2 * 20)
    off = report_json(memory_sample=0)["memory"]
    assert off["available"] is False
    assert off["estimated_sessions_bytes"] is None


@pytest.mark.redis
def test_csv_and_table_say_what_json_says(known: dict[str, Any]) -> None:
    data = report_json(top=3)
    out, err = report(format="csv", top=3)
    assert err == ""
    rows = list(csv.DictReader(io.StringIO(out)))
    assert set(rows[0]) == {"section", "rank", "field", "value"}

    def value(section: str, field: str, rank: str = "") -> str:
        matches = [
            r["value"] for r in rows if (r["section"], r["field"], r["rank"]) == (section, field, rank)
        ]
        assert len(matches) == 1, (section, field, rank)
        return matches[0]

    assert value("summary", "sessions") == "20"
    assert value("messages_per_session", "p95") == "18"
    assert value("largest_sessions", "id", "1") == data["largest_sessions"][0]["id"]
    assert value("largest_sessions", "owner", "1") == ""  # null
    assert value("top_owners", "owners.owner", "2") == "user:b"
    assert value("index_drift", "missing_entries") == "2"
    assert value("top_owners", "exact") == "true"

    table, _ = report(top=3)
    assert "Sessions   20" in table
    assert "messages per session" in table
    assert "user:a" in table
    assert "(unowned)" in table
    assert "stale entries 4 (session gone)" in table
    assert "missing entries 2 (session not in its owner's index)" in table
    assert "Run with --repair" in table


@pytest.mark.redis
def test_filters_narrow_the_report(known: dict[str, Any]) -> None:
    rows = known["rows"]
    owned = report_json(owner="user:b")
    assert owned["sessions"] == 6
    assert owned["messages"] == sum(range(10, 16))
    assert owned["filters"]["owner"] == "user:b"
    # Only user:b's index is checked: the stale entries live in user:a's.
    assert (owned["index_drift"]["stale_entries"], owned["index_drift"]["missing_entries"]) == (0, 1)

    idle = report_json(idle_longer_than="135s")
    expected = [row for row in rows if report_now_ms(idle) - row["updated"] > 135_000]
    assert idle["sessions"] == len(expected) == 6
    assert idle["messages_per_session"]["min"] == 14
    assert idle["filters"]["idle_longer_than_seconds"] == 135
    assert report_json(owner="user:nobody")["sessions"] == 0


@pytest.mark.redis
def test_repair_fixes_drift(
    known: dict[str, Any], store: ConversationStore, redis_client: redis.Redis
) -> None:
    before = report_json()["index_drift"]
    assert (before["stale_entries"], before["missing_entries"]) == (4, 2)
    again = report_json()["index_drift"]  # a report without --repair changes nothing
    assert (again["stale_entries"], again["missing_entries"]) == (4, 2)

    out, err = report(format="json", repair=True)
    repaired = json.loads(out)["index_drift"]
    assert (repaired["repaired_stale"], repaired["repaired_missing"]) == (4, 2)
    # The only option of a report that writes says so, on stderr (stdout stays the JSON).
    assert "--repair wrote to Redis: removed 4 stale index entries, added 2 missing ones." in err
    after = report_json()["index_drift"]
    assert (after["stale_entries"], after["missing_entries"]) == (0, 0)

    rows = known["rows"]
    index_a = store.keys.owner_index("user:a")
    assert redis_client.zscore(index_a, rows[3]["id"]) == rows[3]["updated"]
    assert redis_client.zscore(index_a, rows[11]["id"]) is None
    assert redis_client.pttl(index_a) > 0
    # What a user notices: the sessions missing from the listing are listed again.
    assert {s.id for s in store.list_sessions(owner="user:a")} == {row["id"] for row in rows[:10]}
    assert rows[12]["id"] in {s.id for s in store.list_sessions(owner="user:b")}


@pytest.mark.redis
def test_corrupt_keys_are_counted_not_fatal(store: ConversationStore, redis_client: redis.Redis) -> None:
    keys = store.keys
    now = server_time_ms(redis_client)
    pipe = redis_client.pipeline(transaction=False)
    put_session(pipe, keys, owner="user:ok", created_at=now, updated_at=now, messages=2)
    pipe.set(keys.meta(session_id()), "a string, not a hash")
    pipe.hset(keys.meta(session_id()), mapping={"owner": "user:x", "created_at": "yesterday"})
    pipe.hset(keys.meta(session_id()), mapping={"title": "no owner field"})
    pipe.hset(keys.meta("short"), mapping={"owner": "user:x"})  # not a session id
    mismatch = put_session(pipe, keys, owner="user:x", created_at=now, updated_at=now, messages=3)
    pipe.hset(keys.meta(mismatch), "count", 5)
    garbled = put_session(pipe, keys, owner="user:x", created_at=now, updated_at=now, messages=2)
    pipe.zadd(keys.messages(garbled), {b"{not json": 3})
    pipe.hset(keys.meta(garbled), mapping={"count": 3, "seq": 3})
    forever = put_session(pipe, keys, owner="user:x", created_at=now, updated_at=now, messages=1)
    pipe.persist(keys.meta(forever))
    wrong_list = put_session(pipe, keys, owner="user:x", created_at=now, updated_at=now)
    pipe.set(keys.messages(wrong_list), "not a sorted set")
    pipe.execute()

    data = report_json(memory_sample=1)
    assert data["corrupt"]["by_kind"] == {
        "bad_key": 1,
        "bad_meta": 2,
        "bad_message": 1,
        "count_mismatch": 1,
        "no_expiry": 1,
        "wrong_type": 2,
    }
    assert data["corrupt"]["total"] == 8
    kinds = {(e["kind"], e["key"]) for e in data["corrupt"]["examples"]}
    assert ("count_mismatch", keys.meta(mismatch)) in kinds
    assert ("bad_message", keys.messages(garbled)) in kinds
    # Readable sessions are still counted, damaged or not.
    assert data["sessions"] == 4
    table, _ = report(memory_sample=1)
    assert "Corrupt keys: 8" in table


@pytest.mark.redis
def test_a_concurrent_append_is_not_reported_as_corruption(store: ConversationStore) -> None:
    session = store.create_session(owner="user:busy")
    for i in range(3):
        store.append_message(session.id, role="user", content=str(i), owner="user:busy")
    data = report_json(memory_sample=1)
    assert data["corrupt"]["total"] == 0
    assert data["index_drift"]["missing_entries"] == 0
    assert data["messages"] == 3


@pytest.mark.redis
def test_progress_goes_to_stderr_only_when_asked(known: dict[str, Any]) -> None:
    _, err = report()
    assert err == ""  # no progress off a terminal, and no write was made to mention
    out_p, err_p = report(progress=True)
    assert "sessions" in err_p
    assert "100%" in err_p
    assert "scanning [" not in out_p


# ---------------------------------------------------------------------- scale and memory


def _seed_many(client: redis.Redis, store: ConversationStore, start: int, stop: int, now: int) -> None:
    rows = [
        (f"user:{i % 400}", now - (i % 997) * 1000, now - (i % 89) * 1000, i % 4) for i in range(start, stop)
    ]
    put_sessions_bulk(client, store.keys, rows)


def _peak_bytes(store: ConversationStore) -> tuple[int, dict[str, Any]]:
    tracemalloc.start()
    try:
        data = build_report(store, ReportOptions(memory_sample_every=50))
        return tracemalloc.get_traced_memory()[1], data
    finally:
        tracemalloc.stop()


@pytest.mark.redis
@pytest.mark.slow
def test_report_over_50000_sessions_streams_in_flat_memory(
    store: ConversationStore, redis_client: redis.Redis
) -> None:
    now = server_time_ms(redis_client)
    _seed_many(redis_client, store, 0, 5_000, now)
    peak_small, small = _peak_bytes(store)
    _seed_many(redis_client, store, 5_000, 50_000, now)
    peak_large, large = _peak_bytes(store)

    assert (small["sessions"], large["sessions"]) == (5_000, 50_000)
    assert large["messages"] == sum(i % 4 for i in range(50_000))
    assert large["messages_per_session"]["max"] == 3
    assert large["top_owners"]["owners"][0]["sessions"] == 125
    assert large["corrupt"]["total"] == 0
    # Ten times the sessions, the same memory: keeping even 100 bytes per session would add ~4.5 MB.
    assert peak_large < peak_small * 1.3 + 512 * 1024, (peak_small, peak_large)


@pytest.mark.redis
def test_command_line_arguments_are_parsed(known: dict[str, Any]) -> None:
    out, _ = report("--format=json", "--top=2", "--memory-sample=0", "--idle-longer-than", "1m")
    data = json.loads(out)
    assert len(data["largest_sessions"]) == 2
    assert data["filters"]["idle_longer_than_seconds"] == 60
    assert data["memory"]["available"] is False


# ---------------------------------------------------------------------- stalled replies, layouts, registry


def test_stalled_replies_count_in_progress_messages_of_idle_sessions(
    store: ConversationStore, redis_client: redis.Redis
) -> None:
    idle = store.create_session(owner="user:s")
    store.append_message(idle.id, role="user", content="q", owner="user:s")
    store.append_message(idle.id, role="assistant", content="half", owner="user:s", status="in_progress")
    store.append_message(idle.id, role="assistant", content="also", owner="user:s", status="in_progress")
    done = store.append_message(idle.id, role="assistant", content="x", owner="user:s", status="in_progress")
    store.update_message(idle.id, done.id, owner="user:s", status="completed")
    busy = store.create_session(owner="user:s")
    store.append_message(busy.id, role="assistant", content="streaming", owner="user:s", status="in_progress")
    # The first session went quiet 20 minutes ago; the second is being written now.
    redis_client.hset(store.keys.meta(idle.id), "updated_at", server_time_ms(redis_client) - 20 * MINUTE)

    data = report_json()
    assert data["stalled_replies"] == {"idle_longer_than_seconds": 600, "messages": 2, "sessions": 1}
    assert report_json(stalled_after="30m")["stalled_replies"]["messages"] == 0
    assert build_report(store, ReportOptions(stalled_after=0))["stalled_replies"] == {
        "idle_longer_than_seconds": 0,
        "messages": 3,
        "sessions": 2,
    }
    table, _ = report("--stalled-after", "15m")
    assert "Stalled replies: 2 in-progress messages in 1 sessions idle longer than 15m" in table
    csv_out, _ = report(format="csv")
    assert "stalled_replies,,messages,2" in csv_out.splitlines()


def test_stalled_replies_of_a_large_session_are_counted_by_chunks(
    store: ConversationStore, redis_client: redis.Redis, monkeypatch: Any
) -> None:
    from conversations.operations import report as report_module

    monkeypatch.setattr(report_module, "STALL_SCAN_INLINE", 5)
    monkeypatch.setattr(report_module, "STALL_SCAN_CHUNK", 4)
    session = store.create_session(owner="user:big")
    for i in range(11):
        status = "in_progress" if i in (0, 4, 10) else "completed"
        store.append_message(session.id, role="assistant", content=str(i), owner="user:big", status=status)
    redis_client.hset(store.keys.meta(session.id), "updated_at", server_time_ms(redis_client) - 20 * MINUTE)
    data = build_report(store, ReportOptions())
    assert data["stalled_replies"]["messages"] == 3
    assert data["script_calls"] >= 3  # the inspecting call, then the message set in chunks of 4
    assert data["longest_script_call_ms"] > 0


def test_layout_1_sessions_are_counted_and_sampled_from_their_list(
    store: ConversationStore, redis_client: redis.Redis
) -> None:
    now = server_time_ms(redis_client)
    pipe = redis_client.pipeline(transaction=False)
    legacy = put_session(
        pipe,
        store.keys,
        owner="user:old",
        created_at=now - MINUTE,
        updated_at=now,
        messages=4,
        layout_version=1,
    )
    current = put_session(
        pipe, store.keys, owner="user:old", created_at=now - MINUTE, updated_at=now, messages=2
    )
    pipe.execute()
    data = build_report(store, ReportOptions(memory_sample_every=1))
    assert data["sessions"] == 2
    assert data["messages"] == 6
    assert data["corrupt"]["total"] == 0, data["corrupt"]  # its first and last message were found
    assert data["memory"]["sampled_sessions"] == 2
    # A damaged layout-1 message is found in the list, and a count that disagrees with it is damage.
    redis_client.rpush(store.keys.legacy_messages(legacy), b"not json")
    data = build_report(store, ReportOptions(memory_sample_every=1))
    kinds = data["corrupt"]["by_kind"]
    assert kinds == {"bad_message": 1, "count_mismatch": 1}, data["corrupt"]
    assert {e["key"] for e in data["corrupt"]["examples"]} == {
        store.keys.legacy_messages(legacy),
        store.keys.meta(legacy),
    }
    assert current not in str(data["corrupt"])


def test_report_scripts_live_in_the_store_registry() -> None:
    import inspect

    from conversations.operations import purge, seed_import
    from conversations.operations import report as report_module
    from conversations.store import scripts

    for module in (report_module, purge, seed_import):
        assert "register_script" not in inspect.getsource(module)
        assert "redis.call" not in inspect.getsource(module)
    for name in (
        "REPORT_INSPECT",
        "REPORT_STALLED",
        "REPORT_INDEX_SCORES",
        "REPORT_OWNERS",
        "REPORT_SCAN",
        "REPORT_CHECK",
        "REPORT_INDEXES",
    ):
        assert getattr(scripts, name).read_only, name
    assert not scripts.REPORT_REPAIR_MISSING.read_only


def test_distribution_add_many_equals_adding_one_by_one() -> None:
    rng = random.Random(7)
    values = [rng.choice((0, 3, 10, 127, 128, 5_000, 10**9)) for _ in range(500)]
    values += [rng.randrange(0, 10**12) for _ in range(500)]
    one, many = Distribution(), Distribution()
    for value in values:
        one.add(value)
    many.add_many(values[:300])
    many.add_many([])
    many.add_many(values[300:])
    assert many.summary() == one.summary()
    assert many.bucket_count == one.bucket_count

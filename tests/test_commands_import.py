"""``manage.py conversations_import`` on the real Redis: a data set written in the seed store's exact
JSON shape is imported losing nothing, a second run imports nothing twice, sources are deleted only
after a verified copy, and corrupt values are reported and skipped."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError

from conversations.store import ConversationStore

from .conftest import delete_prefix
from .factories import seed_value

pytestmark = pytest.mark.redis

T0 = 1_700_000_000  # seconds, as the seed stored times


def run_import(*args: str, **options: Any) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("conversations_import", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def source(key_prefix: str, redis_client: redis.Redis) -> Iterator[str]:
    """A source prefix of this test's own (the seed's default "session:" is shared by everyone)."""
    base = f"{key_prefix}-seed"
    yield f"{base}:session:"
    delete_prefix(redis_client, base)


REFUND = [
    {"role": "user", "content": "Where is my refund? ünïcødé ✓", "timestamp": T0 + 10, "sources": []},
    {
        "role": "assistant",
        "content": "It was sent on Monday.",
        "timestamp": T0 + 20,
        "sources": [{"url": "https://example.com/orders/7", "title": "Order 7", "score": 0.93}],
    },
    {"role": "user", "content": "Thanks!", "timestamp": T0 + 30},  # no "sources": the seed allowed it
]


@pytest.fixture
def seeded(source: str, redis_client: redis.Redis) -> dict[str, Any]:
    """Three good seed sessions, four corrupt values, one beyond limits, and one hash under the prefix."""
    good = {
        "a1b2c3d4": {
            "value": seed_value(
                "a1b2c3d4",
                created_at=T0,
                updated_at=T0 + 30,
                metadata={"user_id": 7, "title": "Refund question", "lang": "en"},
                messages=REFUND,
            ),
            "ttl": 1000,
        },
        "00000000": {"value": seed_value("00000000", created_at=T0, updated_at=T0), "ttl": None},
        "ffffffff": {
            "value": seed_value(
                "ffffffff",
                created_at=T0 + 5,
                updated_at=T0 + 6,
                metadata={"user_id": "abc"},
                messages=[{"role": "system", "content": "Be brief.", "timestamp": T0 + 6, "sources": None}],
            ),
            "ttl": 500,
        },
    }
    corrupt = {
        "badjson1": "{not json",
        "notobj01": "[1, 2]",
        "msgsbad1": '{"session_id": "msgsbad1", "messages": "nope"}',
        "nocontnt": seed_value("nocontnt", created_at=T0, updated_at=T0).replace(
            '"messages": []', '"messages": [{"role": "user", "timestamp": 1}]'
        ),
    }
    too_big = seed_value(
        "wizard00",
        created_at=T0,
        updated_at=T0,
        messages=[{"role": "wizard", "content": "abracadabra", "timestamp": T0}],
    )
    pipe = redis_client.pipeline(transaction=False)
    for old_id, item in good.items():
        pipe.set(source + old_id, item["value"], ex=item["ttl"])
    for old_id, value in corrupt.items():
        pipe.set(source + old_id, value, ex=600)
    pipe.set(source + "wizard00", too_big, ex=600)
    pipe.hset(source + "ahash000", "field", "value")
    pipe.expire(source + "ahash000", 600)
    pipe.execute()
    return {"good": good, "corrupt": corrupt}


def read_mapping(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["old_id", "new_id"]
    return dict(rows[1:])


def ms(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def test_import_loses_nothing_and_runs_twice_importing_nothing_new(
    store: ConversationStore, seeded: dict[str, Any], source: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    mapping_file = tmp_path / "mapping.csv"
    out, err = run_import(
        source_prefix=source,
        owner_from_metadata="user_id",
        owner_template="user:{}",
        mapping=str(mapping_file),
    )
    assert f"Imported 3 sessions (4 messages) from 9 keys under '{source}'." in out
    assert "Skipped: 4 corrupt, 1 beyond this site's limits, 1 not strings." in out
    assert "Without an owner (unowned): 1." in out
    for old_id in ("badjson1", "notobj01", "msgsbad1", "nocontnt", "wizard00", "ahash000"):
        assert source + old_id in err
    assert "message 1 has no 'content'" in err
    assert "The role must be one of" in err

    mapping = read_mapping(mapping_file)
    assert set(mapping) == {"a1b2c3d4", "00000000", "ffffffff"}

    refund = store.get_session(mapping["a1b2c3d4"], owner="user:7")
    assert refund is not None
    assert len(refund.id) == 22
    assert refund.title == "Refund question"
    assert refund.metadata == {"user_id": 7, "title": "Refund question", "lang": "en"}
    assert (refund.created_at, refund.updated_at) == (ms(T0), ms(T0 + 30))
    assert [(m.id, m.role, m.content, m.sources, m.created_at) for m in refund.messages] == [
        (1, "user", REFUND[0]["content"], [], ms(T0 + 10)),
        (2, "assistant", "It was sent on Monday.", REFUND[1]["sources"], ms(T0 + 20)),
        (3, "user", "Thanks!", [], ms(T0 + 30)),
    ]
    assert 990_000 < redis_client.pttl(store.keys.messages(refund.id)) <= 1_000_000
    assert [s.id for s in store.list_sessions(owner="user:7")] == [refund.id]  # in its owner's index

    empty = store.get_session(mapping["00000000"])  # no owner in its metadata: unowned
    assert empty is not None
    assert (empty.message_count, empty.title, empty.metadata) == (0, "", {})
    # The source had no TTL: the session gets SESSION_TTL.
    assert store.ttl_ms - 10_000 < redis_client.pttl(store.keys.meta(empty.id)) <= store.ttl_ms

    brief = store.get_session(mapping["ffffffff"], owner="user:abc")
    assert brief is not None
    assert [(m.role, m.content, m.sources) for m in brief.messages] == [("system", "Be brief.", [])]
    # The sources are left in place.
    assert redis_client.exists(*(source + old_id for old_id in seeded["good"])) == 3

    # Second run: nothing imported twice; the mapping file still lists every session.
    out, _ = run_import(
        source_prefix=source,
        owner_from_metadata="user_id",
        owner_template="user:{}",
        mapping=str(mapping_file),
    )
    assert f"Imported 0 sessions (0 messages) from 9 keys under '{source}'." in out
    assert "Already imported (left alone): 3." in out
    assert read_mapping(mapping_file) == mapping
    assert len(list(redis_client.scan_iter(match=store.keys.meta_pattern()))) == 3


def test_dry_run_writes_nothing(store: ConversationStore, seeded: dict[str, Any], source: str) -> None:
    out, _ = run_import(source_prefix=source, owner="user:1", dry_run=True)
    assert "Would import 3 sessions (4 messages)" in out
    assert list(store.client.scan_iter(match=f"{store.keys.prefix}:*")) == []


def test_delete_source_only_after_a_verified_copy(
    store: ConversationStore, seeded: dict[str, Any], source: str, redis_client: redis.Redis
) -> None:
    out, _ = run_import(source_prefix=source, owner="user:1", delete_source=True)
    assert "Imported 3 sessions" in out
    assert "Sources deleted after verification: 3; kept: 0." in out
    assert redis_client.exists(*(source + old_id for old_id in seeded["good"])) == 0
    # Corrupt sources stay for a person to look at.
    assert redis_client.exists(*(source + old_id for old_id in seeded["corrupt"])) == 4
    sessions = store.list_sessions(owner="user:1")
    assert sorted(s.message_count for s in sessions) == [0, 1, 3]


def test_delete_source_keeps_a_source_whose_copy_differs(
    store: ConversationStore, seeded: dict[str, Any], source: str, redis_client: redis.Redis
) -> None:
    run_import(source_prefix=source, owner="user:1")
    mapping = {
        k.decode()[len(source) :]: v.decode()
        for k, v in redis_client.hgetall(store.keys.import_mapping()).items()
    }
    # Someone damaged one copy since the first run: its source must survive a --delete-source run.
    messages = store.keys.messages(mapping["a1b2c3d4"])
    redis_client.zremrangebyscore(messages, 2, 2)
    redis_client.zadd(messages, {b'{"id":2,"tampered":true}': 2})
    out, err = run_import(source_prefix=source, owner="user:1", delete_source=True)
    assert "Already imported (left alone): 3." in out
    assert "Sources deleted after verification: 2; kept: 1." in out
    assert f"{source}a1b2c3d4: source not deleted" in err
    assert redis_client.exists(source + "a1b2c3d4") == 1
    assert redis_client.exists(source + "ffffffff") == 0


def test_limits_are_reported_not_truncated(
    settings: Any, store: ConversationStore, seeded: dict[str, Any], source: str
) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGE_LENGTH": 10}
    out, err = run_import(source_prefix=source, owner="user:1")
    assert "Imported 2 sessions" in out  # the refund session has a 29-character message
    assert f"over_limits: {source}a1b2c3d4: message 1: The content is 29 characters; the limit is 10." in err
    assert all(s.message_count <= 1 for s in store.list_sessions(owner="user:1"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"owner": "user:1", "owner_from_metadata": "user_id"}, "not both"),
        ({"dry_run": True, "delete_source": True}, "--dry-run"),
        ({"owner_from_metadata": "user_id", "owner_template": "user:"}, "exactly once"),
        ({"source_prefix": ""}, "must not be empty"),
        ({"mapping": "/nonexistent-dir/out.csv"}, "Cannot write the mapping file"),
    ],
)
def test_bad_options_are_command_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run_import(**options)


def test_unreachable_redis_is_a_command_error(settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "CACHE_ALIAS": "unreachable"}
    with pytest.raises(CommandError, match="Cannot reach Redis"):
        run_import(source_prefix="nothing-here:")


def test_a_source_written_during_the_import_is_not_deleted(
    store: ConversationStore,
    seeded: dict[str, Any],
    source: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conversations.operations.seed_import import SeedImporter

    verify = SeedImporter._verify

    def verify_while_the_seed_app_appends(self: SeedImporter, session_id: str, planned: Any) -> str | None:
        problem = verify(self, session_id, planned)
        if planned.messages and b"Be brief." in planned.messages[0]:
            # The seed app, still running, rewrites this session after the import read it.
            value = seeded["good"]["ffffffff"]["value"].replace("brief", "BRIEF")
            redis_client.set(source + "ffffffff", value)
        return problem

    monkeypatch.setattr(SeedImporter, "_verify", verify_while_the_seed_app_appends)
    out, err = run_import(source_prefix=source, owner="user:1", delete_source=True)
    assert "kept: 1." in out
    assert f"{source}ffffffff: source not deleted: the source changed after it was read" in err
    assert b"BRIEF" in (redis_client.get(source + "ffffffff") or b"")

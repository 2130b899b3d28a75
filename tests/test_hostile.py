"""Hostile input, in Python and over HTTP: it gets a clear error (a 4xx, never a 500), never reaches a
Redis key name, never picks the owner, and cannot tell another owner's session from a missing one.

Where a test says "sent nothing to Redis" or "the same Redis commands", it counts commands on a private
redis-server (``INFO commandstats`` before and after), so the claim is structural, not a timing.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from conversations.exceptions import InvalidInput, SessionNotFound
from conversations.store import ConversationStore, get_store, new_session_id
from tests.redis_server import PrivateRedis
from tests.test_views import SESSIONS, call, endpoints

pytestmark = pytest.mark.redis

HANG_BOUND = 30.0  # seconds; only to tell "refused" from "hung", never a speed claim

HOSTILE_IDS = [
    "*",
    "conversations:*",
    "a:b",
    "{x}",
    "}{",
    "{" + "A" * 20 + "}",
    "a\nb",
    "A" * 21 + "\n",
    "A" * 22 + "\n",
    "A" * 22 + "*",
    "\r\nFLUSHALL\r\n",
    " " * 22,
    "../" * 8,
    "%s%n",
    "x" * 100_000,
    "ü" * 22,
    "🙂" * 11,
    "\uff21" * 22,  # full-width "A": \w would match it, the id pattern must not
    "",
]

# Connection set-up, not the request: a fresh pooled connection sends these once.
_SETUP_COMMANDS = {"info", "hello", "select", "client|setname", "client|setinfo", "ping"}


def command_calls(admin: redis.Redis) -> Counter[str]:
    stats = admin.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})


def commands_during(admin: redis.Redis, action: Callable[[], Any]) -> Counter[str]:
    """Which commands (and how many of each) Redis ran while ``action`` ran."""
    before = command_calls(admin)
    action()
    delta = command_calls(admin) - before
    for name in _SETUP_COMMANDS:
        delta.pop(name, None)
    return delta


SAFE_KEY = re.compile(
    r"\A(?P<prefix>[^{}\s]+):(?:layout"
    r"|s:\{[A-Za-z0-9_-]{22}\}:(?:meta|m|msgs|idem|ev)"
    r"|o:\{(?:-|[0-9a-f]{32})\}:(?:sessions|idem:[0-9a-f]{32}))\Z"
)


def unsafe_keys(client: redis.Redis, prefix: str) -> list[str]:
    """Keys under ``prefix`` that are not one of the layout's fixed shapes (ids and digests only)."""
    keys = [raw.decode("utf-8", "replace") for raw in client.scan_iter(match=f"{prefix}:*", count=1000)]
    return [key for key in keys if not SAFE_KEY.match(key) or not key.startswith(f"{prefix}:")]


@pytest.fixture
def private_store(private_cache: PrivateRedis) -> ConversationStore:
    return get_store()


@pytest.fixture
def admin(private_cache: PrivateRedis) -> Iterator[redis.Redis]:
    client = private_cache.admin()
    yield client
    client.close()


# ============================================================================ Python API


@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_hostile_ids_are_not_found_and_send_nothing_to_redis(
    private_store: ConversationStore, admin: redis.Redis, bad_id: str
) -> None:
    store = private_store

    def every_call() -> None:
        assert store.get_session(bad_id, owner="user:1") is None
        assert store.delete_session(bad_id, owner="user:1") is False
        for attempt in (
            lambda: store.append_message(bad_id, role="user", content="x", owner="user:1"),
            lambda: store.get_messages(bad_id, owner="user:1", last=3),
            lambda: store.count_messages(bad_id, owner="user:1"),
            lambda: store.get_session_summary(bad_id, owner="user:1"),
            lambda: store.update_session(bad_id, owner="user:1", title="t"),
        ):
            with pytest.raises(SessionNotFound):
                attempt()

    assert commands_during(admin, every_call) == Counter()
    assert admin.dbsize() == 0


HOSTILE_OWNERS = ["*", "user:1}{", "{user:1}", "a\nb", "\r\nDEL *\r\n", "🙂" * 60, "x" * 256, ":", " "]


def test_hostile_owners_and_keys_reach_redis_only_as_digests(store: ConversationStore) -> None:
    client = store.client
    for owner in HOSTILE_OWNERS:
        session = store.create_session({"k": "v"}, owner=owner, title=owner[:200], idempotency_key="*{}:")
        store.append_message(session.id, role="user", content=owner, owner=owner, idempotency_key="k*:{}")
        assert [s.id for s in store.list_sessions(owner=owner)] == [session.id]
        for other in HOSTILE_OWNERS:
            if other != owner:
                assert store.get_session(session.id, owner=other) is None
    assert unsafe_keys(client, store.keys.prefix) == []
    names = b" ".join(client.scan_iter(match=f"{store.keys.prefix}:*", count=1000))
    for owner in HOSTILE_OWNERS:
        if owner.strip() and owner != ":":
            assert owner.encode() not in names


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"owner": "x" * 257}, "owner"),
        ({"owner": ""}, "owner"),
        ({"idempotency_key": "a\nb"}, "idempotency_key"),
        ({"idempotency_key": "x" * 256}, "idempotency_key"),
        ({"idempotency_key": "ключ"}, "idempotency_key"),
    ],
)
def test_unusable_owners_and_keys_are_invalid_input(
    private_store: ConversationStore, admin: redis.Redis, kwargs: dict[str, Any], field: str
) -> None:
    def attempt() -> None:
        with pytest.raises(InvalidInput) as info:
            private_store.create_session(**kwargs)
        assert info.value.field == field

    assert commands_during(admin, attempt) == Counter()


def _deep(levels: int, container: str) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = {"a": value} if container == "dict" else [value]
    return value


def _shared_bomb() -> Any:
    # A billion values in a few KB: one list repeated, as only a Python caller can build.
    return [[[0] * 1000] * 1000] * 1000


JSON_BOMBS: dict[str, Any] = {
    "nested dicts 100k deep": _deep(100_000, "dict"),
    "nested lists 100k deep": _deep(100_000, "list"),
    "integer of 5000 digits": 10**4999,
    "integer past 64 bits": 2**64,
    "infinity": float("inf"),
    "nan": float("nan"),
    "array of a million": list(range(1_000_000)),
    "string of 10 MB": "x" * 10_000_000,
    "shared-reference bomb": _shared_bomb(),
    "non-string key": {1: "x"},
    "bytes": b"\x00",
    "a set": {1, 2},
    "lone surrogate": "\ud800",
}


@pytest.mark.parametrize("bomb", list(JSON_BOMBS), ids=list(JSON_BOMBS))
def test_json_bombs_are_refused_before_anything_reaches_redis(
    private_store: ConversationStore, admin: redis.Redis, bomb: str
) -> None:
    store = private_store
    session = store.create_session(owner="user:1")
    value = JSON_BOMBS[bomb]
    refused: dict[str, Callable[[], Any]] = {
        "metadata": lambda: store.create_session({"v": value}, owner="user:1"),
        "update": lambda: store.update_session(session.id, owner="user:1", metadata={"v": value}),
        "sources": lambda: store.append_message(
            session.id, role="user", content="x", sources=[{"v": value}], owner="user:1"
        ),
    }
    for name, write in refused.items():
        started = time.monotonic()

        def attempt(write: Callable[[], Any] = write, name: str = name) -> None:
            with pytest.raises(InvalidInput) as info:
                write()
            assert info.value.field in {"metadata", "sources"}, name

        assert commands_during(admin, attempt) == Counter(), name
        assert time.monotonic() - started < HANG_BOUND, name
    assert store.count_messages(session.id, owner="user:1") == 0


# ============================================================================ session ids


def _id_bits(session_id: str) -> int:
    raw = base64.urlsafe_b64decode(session_id + "==")
    assert len(raw) == 16  # 22 URL-safe characters carry 16 bytes: 128 bits
    return int.from_bytes(raw, "big")


def test_session_ids_carry_128_random_bits_with_no_sequence(fake_store: ConversationStore) -> None:
    """Ids of sessions created one after another, as an attacker would collect them: every bit is a
    fair coin, consecutive ids share no more than chance, and their order says nothing."""
    ids = [fake_store.create_session(owner="user:1").id for _ in range(2_000)]
    ids += [new_session_id() for _ in range(18_000)]
    assert len(set(ids)) == len(ids)
    values = [_id_bits(i) for i in ids]
    n = len(values)
    # Each of the 128 bits is set about half the time (6 standard deviations: a real flaw is far off).
    sigma = (n / 4) ** 0.5
    for bit in range(128):
        ones = sum((v >> bit) & 1 for v in values)
        assert abs(ones - n / 2) < 6 * sigma, f"bit {bit} is set {ones} times in {n}"
    # Consecutive ids: a shared 5-character prefix has odds 64**-5 per pair; a counter would share many.
    for a, b in itertools.pairwise(ids):
        shared = next((k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), 22)
        assert shared < 5, (a, b)
    # Order carries no information: about half the steps go up, and steps are not constant.
    ups = sum(b > a for a, b in itertools.pairwise(values))
    assert abs(ups - (n - 1) / 2) < 6 * ((n - 1) / 4) ** 0.5
    assert len({b - a for a, b in itertools.pairwise(values[:101])}) == 100


# ============================================================ same path: missing and not yours


def test_another_owners_session_takes_the_same_redis_path_as_a_missing_one(
    private_store: ConversationStore, admin: redis.Redis
) -> None:
    store = private_store
    theirs = store.create_session({"secret": 1}, owner="user:1", title="theirs")
    store.append_message(theirs.id, role="user", content="private", owner="user:1")
    missing = new_session_id()

    def probes(session_id: str) -> list[Callable[[], Any]]:
        def expect_not_found(call: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> None:
                with pytest.raises(SessionNotFound):
                    call()

            return run

        return [
            lambda: store.get_session(session_id, owner="user:2"),
            lambda: store.delete_session(session_id, owner="user:2"),
            expect_not_found(
                lambda: store.append_message(session_id, role="user", content="x", owner="user:2")
            ),
            expect_not_found(lambda: store.get_messages(session_id, owner="user:2", last=5)),
            expect_not_found(lambda: store.count_messages(session_id, owner="user:2")),
            expect_not_found(lambda: store.update_session(session_id, owner="user:2", title="x")),
        ]

    for theirs_probe, missing_probe in zip(probes(theirs.id), probes(missing), strict=True):
        theirs_probe(), missing_probe()  # warm up: scripts loaded, connection open
        assert theirs_probe() == missing_probe()
        assert commands_during(admin, theirs_probe) == commands_during(admin, missing_probe)
    assert store.get_session(theirs.id, owner="user:1") is not None  # and nothing was changed


# ============================================================================ HTTP


@pytest.fixture
def users(django_user_model: type[User]) -> tuple[User, User]:
    return (
        django_user_model.objects.create_user("mallory", password="pw-mallory"),
        django_user_model.objects.create_user("alice", password="pw-alice"),
    )


def client_for(user: User) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    return client


def session_endpoints(session_id: str) -> list[tuple[str, str, Any]]:
    """Every operation on one session (not the collection's), with the id escaped into the path."""
    return [e for e in endpoints(quote(session_id, safe="")) if e[1] != SESSIONS]


@pytest.mark.django_db
def test_hostile_ids_over_http_are_the_plain_404_and_send_nothing_to_redis(
    private_cache: PrivateRedis, admin: redis.Redis, users: tuple[User, User]
) -> None:
    client = client_for(users[0])
    for bad_id in HOSTILE_IDS:
        if not bad_id or "/" in bad_id:
            continue  # an empty or slashed segment is another URL (the list, or no route): not an id

        def every_endpoint(bad_id: str = bad_id) -> None:
            for method, path, body in session_endpoints(bad_id):
                response = call(client, method, path, body)
                assert response.status_code == 404, (bad_id[:30], method, path[:60], response.content[:200])
                assert response.json() == {"detail": "Session not found."}

        assert commands_during(admin, every_endpoint) == Counter(), bad_id[:30]
    assert admin.dbsize() == 0


@pytest.mark.django_db
def test_another_owners_session_over_http_is_the_same_404_by_the_same_path(
    private_cache: PrivateRedis, admin: redis.Redis, users: tuple[User, User]
) -> None:
    mallory, alice = client_for(users[0]), client_for(users[1])
    theirs = alice.post(SESSIONS, {"title": "alice's", "metadata": {"secret": 1}}, format="json").json()["id"]
    assert (
        alice.post(
            f"{SESSIONS}{theirs}/messages/", {"role": "user", "content": "hi"}, format="json"
        ).status_code
        == 201
    )
    missing = new_session_id()
    for (method, theirs_path, body), (_, missing_path, _) in zip(
        session_endpoints(theirs), session_endpoints(missing), strict=True
    ):
        call(mallory, method, theirs_path, body), call(mallory, method, missing_path, body)  # warm up
        responses: list[Any] = []

        def probe(
            path: str, method: str = method, body: Any = body, responses: list[Any] = responses
        ) -> None:
            responses.append(call(mallory, method, path, body))

        deltas = [commands_during(admin, lambda p=path: probe(p)) for path in (theirs_path, missing_path)]
        assert deltas[0] == deltas[1], (method, theirs_path)
        first, second = responses
        assert first.status_code == second.status_code == 404
        assert first.content == second.content
        assert sorted(first.headers.items()) == sorted(second.headers.items())
    assert alice.get(f"{SESSIONS}{theirs}/").json()["message_count"] == 1


def _nested_json(levels: int) -> str:
    return '{"a":' * levels + "0" + "}" * levels


HOSTILE_BODIES: dict[str, tuple[str, str | bytes]] = {
    # name: (content type, body); every one must be a 4xx
    "metadata nested 100k deep": ("application/json", '{"metadata": ' + _nested_json(100_000) + "}"),
    "array nested 100k deep": (
        "application/json",
        '{"metadata": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}",
    ),
    "body nested 100k deep": ("application/json", "[" * 100_000 + "]" * 100_000),
    "metadata nested 17 deep": ("application/json", '{"metadata": ' + _nested_json(17) + "}"),
    "integer of 5000 digits": ("application/json", '{"metadata": {"a": ' + "9" * 5000 + "}}"),
    "integer past 64 bits": ("application/json", '{"metadata": {"a": 18446744073709551616}}'),
    "float overflow": ("application/json", '{"metadata": {"a": 1e999}}'),
    "NaN": ("application/json", '{"metadata": {"a": NaN}}'),
    "array of 500k": ("application/json", '{"metadata": {"a": [' + ",".join(["0"] * 500_000) + "]}}"),
    "lone surrogate": ("application/json", '{"title": "\\ud800", "metadata": {"\\udfff": 1}}'),
    "not an object": ("application/json", '"just a string"'),
    "truncated": ("application/json", '{"metadata": {"a": [1, 2'),
    "not UTF-8": ("application/json", b'{"title": "\xff\xfe"}'),
    "UTF-16 declared": ("application/json; charset=utf-16", '{"title": "x"}'),
    "form with deep JSON": ("application/x-www-form-urlencoded", "metadata=" + quote(_nested_json(100_000))),
    "form with non-JSON": ("application/x-www-form-urlencoded", "metadata=%7Bnot+json"),
    "plain text": ("text/plain", '{"title": "x"}'),
    "XML": ("application/xml", "<title>x</title>"),
    "YAML": ("application/yaml", "title: x"),
    "no content type": ("", '{"title": "x"}'),
    "multipart with deep JSON": (
        "multipart/form-data; boundary=zz",
        '--zz\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        + _nested_json(100_000)
        + "\r\n--zz--\r\n",
    ),
    "multipart without boundary": ("multipart/form-data", "garbage"),
    "oversize": ("application/json", json.dumps({"title": "x", "metadata": {"a": "y" * 3_000_000}})),
}

MESSAGE_BODIES: dict[str, tuple[str, str]] = {
    "sources nested 100k deep": (
        "application/json",
        '{"role": "user", "content": "x", "sources": [' + _nested_json(100_000) + "]}",
    ),
    "sources as an object": ("application/json", '{"role": "user", "content": "x", "sources": {"a": 1}}'),
    "a million sources": (
        "application/json",
        '{"role": "user", "content": "x", "sources": [' + ",".join(["{}"] * 300_000) + "]}",
    ),
    "content as a number": ("application/json", '{"role": "user", "content": 12}'),
    "content of 40k characters": ("application/json", json.dumps({"role": "user", "content": "x" * 40_000})),
    "role not allowed": ("application/json", '{"role": "root", "content": "x"}'),
    "role with a newline": ("application/json", '{"role": "user\\n", "content": "x"}'),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(HOSTILE_BODIES), ids=list(HOSTILE_BODIES))
def test_hostile_session_bodies_get_a_4xx_and_write_nothing(
    private_cache: PrivateRedis, admin: redis.Redis, users: tuple[User, User], name: str
) -> None:
    client = client_for(users[0])
    session_id = client.post(SESSIONS, {}, format="json").json()["id"]
    keys_before = sorted(admin.scan_iter(count=1000))
    content_type, body = HOSTILE_BODIES[name]
    for method, path in (("post", SESSIONS), ("patch", f"{SESSIONS}{session_id}/")):
        raw = body if isinstance(body, bytes) else body.encode()
        response = client.generic(method.upper(), path, raw, content_type=content_type)
        assert 400 <= response.status_code < 500, (method, response.status_code, response.content[:300])
    assert sorted(admin.scan_iter(count=1000)) == keys_before
    session = client.get(f"{SESSIONS}{session_id}/").json()
    assert (session["title"], session["metadata"]) == ("", {})


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(MESSAGE_BODIES), ids=list(MESSAGE_BODIES))
def test_hostile_message_bodies_get_a_4xx_and_append_nothing(
    private_cache: PrivateRedis, users: tuple[User, User], name: str
) -> None:
    client = client_for(users[0])
    session_id = client.post(SESSIONS, {}, format="json").json()["id"]
    content_type, body = MESSAGE_BODIES[name]
    response = client.post(f"{SESSIONS}{session_id}/messages/", body.encode(), content_type=content_type)
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert client.get(f"{SESSIONS}{session_id}/").json()["message_count"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "limit=99999999999999999999999",
        "limit=-1",
        "limit=1e3",
        "limit=%00",
        "cursor=" + "A" * 5000,
        "cursor=%00%0A*",
        "cursor=" + base64.urlsafe_b64encode(b"1.AAAA*{}").decode(),
        "cursor=" + base64.urlsafe_b64encode(b"-5." + b"A" * 22).decode(),
        "cursor=" + base64.urlsafe_b64encode(b"9" * 400 + b"." + b"A" * 22).decode(),
    ],
)
def test_hostile_query_strings_get_a_400(
    private_cache: PrivateRedis, users: tuple[User, User], query: str
) -> None:
    client = client_for(users[0])
    session_id = client.post(SESSIONS, {}, format="json").json()["id"]
    for path in (SESSIONS, f"{SESSIONS}{session_id}/messages/"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, response.status_code, response.content[:200])


@pytest.mark.django_db
def test_the_client_can_never_choose_the_owner(
    private_cache: PrivateRedis, admin: redis.Redis, users: tuple[User, User]
) -> None:
    from conversations.store.keys import KeyLayout

    mallory, alice = users
    client = client_for(mallory)
    victim = f"user:{alice.pk}"
    response = client.post(
        f"{SESSIONS}?owner={victim}&user={alice.pk}",
        {"title": "planted", "owner": victim, "user": alice.pk, "user_id": alice.pk},
        format="json",
        headers={"X-Owner": victim, "X-User": victim, "X-Forwarded-User": victim, "Owner": victim},
        REMOTE_USER="alice",
    )
    assert response.status_code == 201
    planted = response.json()["id"]
    store = get_store()
    assert store.get_session(planted, owner=victim) is None
    assert store.get_session(planted, owner=f"user:{mallory.pk}") is not None
    assert client_for(alice).get(SESSIONS).json()["results"] == []
    # The only owner index in Redis is Mallory's.
    layout = KeyLayout(store.keys.prefix)
    assert {k.decode() for k in admin.scan_iter(match="*:sessions")} == {
        layout.owner_index(f"user:{mallory.pk}")
    }


@pytest.mark.django_db
def test_an_anonymous_visitor_cannot_pick_their_owner_with_a_cookie(
    private_cache: PrivateRedis, admin: redis.Redis, settings: Any
) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "ALLOW_ANONYMOUS": True}
    client = APIClient(raise_request_exception=False)
    forged = "*{}:\nuser:1"
    client.cookies["sessionid"] = forged
    response = client.post(SESSIONS, {"title": "anon"}, format="json")
    assert response.status_code == 201
    session_key = client.cookies["sessionid"].value
    assert session_key != forged  # Django refused the forged key and started a fresh session
    store = get_store()
    assert store.get_session(response.json()["id"], owner=f"anon:{session_key}") is not None
    assert store.get_session(response.json()["id"], owner=f"anon:{forged}") is None
    assert unsafe_keys(admin, store.keys.prefix) == []


def _reply_bytes_during(admin: redis.Redis, action: Callable[[], Any]) -> int:
    """Bytes Redis sent to its clients while ``action`` ran (plus one INFO reply of the probe itself)."""
    before = int(admin.info("stats")["total_net_output_bytes"])
    action()
    return int(admin.info("stats")["total_net_output_bytes"]) - before


def test_another_owners_window_sends_no_more_bytes_than_a_missing_session(
    private_store: ConversationStore, admin: redis.Redis
) -> None:
    """Same commands is not enough: a reply carrying the window would still betray the session."""
    store = private_store
    theirs = store.create_session(owner="user:1")
    for i in range(20):
        store.append_message(theirs.id, role="user", content=f"{i} " + "s" * 500, owner="user:1")
    missing = new_session_id()

    def window(session_id: str) -> Callable[[], None]:
        def run() -> None:
            with pytest.raises(SessionNotFound):
                store.get_messages(session_id, owner="user:2", last=20)

        return run

    window(theirs.id)(), window(missing)()  # warm up: script loaded, connection open
    sent_theirs = [_reply_bytes_during(admin, window(theirs.id)) for _ in range(3)]
    sent_missing = [_reply_bytes_during(admin, window(missing)) for _ in range(3)]
    # The window is over 10,000 bytes; the INFO replies differ by a few digits at most.
    assert abs(min(sent_theirs) - min(sent_missing)) < 64, (sent_theirs, sent_missing)
    assert len(store.get_messages(theirs.id, owner="user:1", last=20)) == 20

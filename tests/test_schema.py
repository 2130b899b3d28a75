"""The OpenAPI schema: valid, complete, and true to the live API under schema-driven fuzzing.

schemathesis takes the schema the test site serves at /api/schema/ (read in-process when this module is
collected, so each operation is a test of its own; a test checks the live server serves the same),
generates requests for every operation (valid ones and, in negative mode, invalid ones), sends them over
HTTP to a live server authenticated with HTTP Basic, and runs every check on each response: no 5xx;
status code, content type, headers and body as documented; invalid input refused, valid input accepted;
authentication enforced; 405 for undocumented methods.

What no schema can say is supplied by the harness, and only in the parts of a case meant to be valid:
real session ids half the time (else nearly every detail case is a 404), cursors the server issued, and
an Idempotency-Key unique to its body. Free-form JSON over the store's size limits gets a 400 that is
not counted as "valid data rejected" (the limits are stated in words only).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conversations.pagination import MessageCursor
from conversations.store import ConversationStore
from conversations.store.codec import encode_session_cursor as encode_cursor

pytestmark = pytest.mark.redis

# Bounded: a few dozen generated cases per operation and mode keep the whole run well under a minute.
MAX_EXAMPLES = 40
USERNAME, PASSWORD = "fuzzer", "fuzzer-password"

STATS: dict[str, Any] = {"cases": Counter(), "statuses": Counter(), "failures": 0}


def test_the_schema_validates_without_warnings() -> None:
    out = StringIO()

    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)

    schema = out.getvalue()
    for path in (
        "/api/sessions/",
        "/api/sessions/{id}/",
        "/api/sessions/{id}/messages/",
        "/api/sessions/{id}/messages/{message_id}/",
        "/api/sessions/{id}/messages/{message_id}/extend/",
        "/api/sessions/{id}/truncate/",
        "/api/sessions/{id}/context/",
        "/api/sessions/{id}/export/",
    ):
        assert f"{path}:" in schema
    for header in ("Idempotency-Key", "Retry-After", "Content-Disposition"):
        assert header in schema
    for status in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503):
        assert f"'{status}':" in schema


def test_the_schema_states_cursor_shapes_and_integer_bounds() -> None:
    served = _served_schema()
    params = {
        path: {p["name"]: p["schema"] for p in served["paths"][path]["get"]["parameters"]}
        for path in ("/api/sessions/", "/api/sessions/{id}/messages/")
    }
    session_cursor = re.compile(params["/api/sessions/"]["cursor"]["pattern"])
    message_cursor = re.compile(params["/api/sessions/{id}/messages/"]["cursor"]["pattern"])
    value = served["components"]["schemas"]["JSONValue"]
    integer = next(branch for branch in value["anyOf"] if branch.get("type") == "integer")

    assert not session_cursor.match("0")
    assert not message_cursor.match("0")
    assert session_cursor.match(encode_cursor(1_764_000_000_000, "A" * 22))
    assert session_cursor.match(encode_cursor(0, "A" * 22))
    assert message_cursor.match(MessageCursor("after", 1).encode())
    assert message_cursor.match(MessageCursor("before", 2**40).encode())
    assert (integer["minimum"], integer["maximum"]) == (-(2**63), 2**64 - 1)
    metadata = served["components"]["schemas"]["SessionWrite"]["properties"]["metadata"]
    assert metadata["additionalProperties"] == {"$ref": "#/components/schemas/JSONValue"}


def _served_schema() -> dict[str, Any]:
    """The schema exactly as the test site serves it at /api/schema/ (read in-process at collection)."""
    response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    served: dict[str, Any] = json.loads(response.content)
    return served


# Loaded when the module is collected, so that each operation becomes a test of its own; the requests go
# to the live server (HTTP over loopback), and a test below checks that it serves this same schema.
# The events stream is endless by design (a fuzzer's request would hang until it times out): its
# operation is tested by tests/test_events*.py under real servers instead.
schema = (
    schemathesis.openapi.from_dict(_served_schema())
    .include(path_regex="^/api/sessions/")
    .exclude(path_regex="/events/$")
)
schema.config.update(basic_auth=(USERNAME, PASSWORD), request_timeout=20)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    database="none",
    no_shrink=True,
)
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])

SESSION_IDS: list[str] = []
# Cursors are opaque tokens the server issues; no schema can describe which strings are genuine.
GENUINE_CURSORS: dict[str, list[str]] = {"sessions": [], "messages": []}


@pytest.fixture(scope="module", autouse=True)
def report_figures() -> Iterator[None]:
    """Print the run's figures once the fuzzing is over (pytest -s shows them)."""
    started = time.monotonic()
    yield
    cases = STATS["cases"]
    total = sum(cases.values())
    if total and STATS.get("reported") != total:
        STATS["reported"] = total
        print(
            f"\nschemathesis: {len(cases)} operations, {total} cases, {STATS['failures']} failures "
            f"in {time.monotonic() - started:.1f} s; statuses {dict(sorted(STATS['statuses'].items()))}"
        )


@pytest.fixture
def fuzzer(
    live_server: Any, store: ConversationStore, transactional_db: None, django_user_model: type[User]
) -> str:
    """The fuzzer's account and six sessions with three messages each and a fourth in progress (which
    ``extend/`` takes); returns the live server's URL."""
    user = django_user_model.objects.create_user(USERNAME, password=PASSWORD)
    owner = f"user:{user.pk}"
    SESSION_IDS.clear()
    for i in range(6):
        session = store.create_session({"n": i}, owner=owner, title=f"seed {i}")
        for j in range(3):
            store.append_message(session.id, role="user", content=f"m{j}", owner=owner)
        store.append_message(session.id, role="assistant", content="", status="in_progress", owner=owner)
        SESSION_IDS.append(session.id)
    GENUINE_CURSORS["sessions"] = [str(store.list_sessions_page(owner=owner, limit=2).next_cursor)]
    GENUINE_CURSORS["messages"] = [MessageCursor("after", 1).encode(), MessageCursor("before", 3).encode()]
    url: str = live_server.url
    return url


def test_the_live_server_serves_the_schema_under_test(fuzzer: str) -> None:
    import requests

    served = requests.get(f"{fuzzer}/api/schema/?format=json", timeout=20).json()

    assert served == _served_schema()


def use_genuine_tokens(case: Any) -> None:
    """In the parts of a case meant to be valid, put ids and cursors the server issued (and unique keys).

    Any 22-character id fits the schema, but nearly all of them name no session (404), and only the
    server's own cursors are valid (others get 400): so half the valid-looking ids become real sessions
    of the fuzzer (some since deleted by other cases), and every valid-looking cursor a real cursor. The
    choice depends only on the generated value, so Hypothesis can replay a case. Parts meant to be
    invalid keep whatever was generated.
    """
    if case.meta is None:
        return
    path = case.path_parameters
    if path and "id" in path and not case.meta.is_negative_at(ParameterLocation.PATH):
        weight = sum(map(ord, str(path["id"])))
        if weight % 2:
            path["id"] = SESSION_IDS[weight % len(SESSION_IDS)]
        if "message_id" in path and weight % 3:
            path["message_id"] = 1 + weight % 4  # one of the seeded messages (4 is in progress)
    query = case.query
    if query and "cursor" in query and not case.meta.is_negative_at(ParameterLocation.QUERY):
        pool = GENUINE_CURSORS["messages" if "/messages/" in case.operation.path else "sessions"]
        query["cursor"] = pool[len(str(query["cursor"])) % len(pool)]
    headers = case.headers
    if headers and "Idempotency-Key" in headers and not case.meta.is_negative_at(ParameterLocation.HEADER):
        # A key names one logical request: the generator reuses short keys for other bodies, which is
        # rightly a 422. Tie the key to the body so only true retries share a key.
        request = repr((case.operation.label, case.path_parameters, case.media_type, case.body))
        suffix = hashlib.sha256(request.encode()).hexdigest()[:16]
        headers["Idempotency-Key"] = f"{str(headers['Idempotency-Key'])[:200]}-{suffix}"


def limits_the_schema_cannot_state(response: Any) -> list[Any]:
    """Checks to skip for this response: one, narrowly.

    ``metadata``, ``sources`` and a message's ``data`` are free-form JSON, with limits the schema states
    only in words (encoded
    size, nesting depth, 64-bit integers, JSON-encodable strings). A valid-looking value over such a
    limit rightly gets 400 with an error on that very field: that alone is not counted as "valid data
    rejected". Every other check still runs on the response.
    """
    if response.status_code != 400:
        return []
    body = response.json()
    # A list body's errors come as a list, one object per message.
    fields = {name for item in body for name in item} if isinstance(body, list) else set(body)
    if fields and fields <= {"metadata", "sources", "data"}:
        return [positive_data_acceptance]
    return []


@schema.parametrize()
# The fixture is deliberately shared by the generated cases: one account, one live server, one Redis prefix.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_live_api_matches_its_schema(case: Any, fuzzer: str) -> None:
    STATS["cases"][case.operation.label] += 1
    use_genuine_tokens(case)
    try:
        response = case.call(base_url=fuzzer)
        case.validate_response(response, excluded_checks=limits_the_schema_cannot_state(response))
    except Exception:
        STATS["failures"] += 1
        raise
    STATS["statuses"][response.status_code] += 1
    assert response.status_code < 500

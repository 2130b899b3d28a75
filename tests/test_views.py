"""The HTTP API through DRF's APIClient, on the real Redis: every endpoint and every status it can give."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.test import APIClient

from conversations.exceptions import StoreOutOfMemory
from conversations.serializers import MessageSerializer
from conversations.store import ConversationStore, Message
from conversations.views import SessionViewSet

pytestmark = [pytest.mark.redis, pytest.mark.django_db]

SESSIONS = "/api/sessions/"
MISSING_ID = "A" * 22  # well-formed, but no such session
MESSAGE_KEYS = {"id", "role", "content", "sources", "created_at", "status", "data", "token_count"}


def detail(session_id: str) -> str:
    return f"{SESSIONS}{session_id}/"


def messages_url(session_id: str) -> str:
    return f"{SESSIONS}{session_id}/messages/"


def export_url(session_id: str) -> str:
    return f"{SESSIONS}{session_id}/export/"


@pytest.fixture
def alice(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password="alice-password")


@pytest.fixture
def bob(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("bob", password="bob-password")


@pytest.fixture
def api(store: ConversationStore, alice: User) -> APIClient:
    """Alice's client, on a fresh key prefix in the real Redis."""
    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.fixture
def bob_api(store: ConversationStore, bob: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(bob)
    return client


def streamed(response: Any) -> bytes:
    """The whole body of a streamed response (the export)."""
    assert response.streaming, "expected a streamed response"
    return b"".join(response.streaming_content)


def streamed_json(response: Any) -> Any:
    return json.loads(streamed(response))


def create_session(client: APIClient, **body: Any) -> dict[str, Any]:
    response = client.post(SESSIONS, body, format="json")
    assert response.status_code == 201, response.content
    data: dict[str, Any] = response.json()
    return data


def append(client: APIClient, session_id: str, content: str = "hello", **body: Any) -> dict[str, Any]:
    response = client.post(
        messages_url(session_id), {"role": "user", "content": content, **body}, format="json"
    )
    assert response.status_code == 201, response.content
    data: dict[str, Any] = response.json()
    return data


# --------------------------------------------------------------------------------------------- sessions


def test_create_returns_the_session_with_a_location(api: APIClient) -> None:
    response = api.post(SESSIONS, {"title": "Refund", "metadata": {"model": "gpt-x"}}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "title",
        "metadata",
        "created_at",
        "updated_at",
        "expires_at",
        "message_count",
    }
    assert body["title"] == "Refund"
    assert body["metadata"] == {"model": "gpt-x"}
    assert body["message_count"] == 0
    assert body["created_at"].endswith("Z")
    assert body["expires_at"] > body["created_at"]
    assert response["Location"] == f"http://testserver{detail(body['id'])}"
    assert api.get(response["Location"]).status_code == 200


def test_create_without_a_body_makes_an_untitled_session(api: APIClient) -> None:
    response = api.post(SESSIONS, format="json")

    assert response.status_code == 201
    assert response.json()["title"] == ""
    assert response.json()["metadata"] == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": None}, "metadata"),
        ({"title": "x" * 201}, "title"),
        ({"title": None}, "title"),
        ({"metadata": {"big": "x" * 20_000}}, "metadata"),  # the store's MAX_METADATA_BYTES
        ({"metadata": {"deep": json.loads("[" * 20 + "]" * 20)}}, "metadata"),  # MAX_JSON_DEPTH
        (["a", "list"], "non_field_errors"),
    ],
)
def test_create_refuses_bad_input_with_field_errors(api: APIClient, body: Any, field: str) -> None:
    response = api.post(SESSIONS, body, format="json")

    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == [field]
    assert isinstance(errors[field], list)
    assert errors[field]
    assert api.get(SESSIONS).json()["results"] == []


def test_malformed_json_is_a_400(api: APIClient) -> None:
    response = api.post(SESSIONS, b'{"title": ', content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_nan_in_json_is_a_400(api: APIClient) -> None:
    response = api.post(SESSIONS, b'{"metadata": {"x": NaN}}', content_type="application/json")

    assert response.status_code == 400


def test_an_unsupported_content_type_is_a_415(api: APIClient) -> None:
    response = api.post(SESSIONS, b"title=x", content_type="text/plain")

    assert response.status_code == 415
    assert "text/plain" in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=xyz"])
def test_an_oversize_body_is_a_413(api: APIClient, settings: Any, content_type: str) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    body = json.dumps({"title": "x" * 2_000}).encode()

    response = api.post(SESSIONS, body, content_type=content_type)

    assert response.status_code == 413
    assert response.json()["detail"]
    assert api.get(SESSIONS).json()["results"] == []


@pytest.mark.parametrize("target", ["create", "patch", "append", "patch message", "extend", "truncate"])
def test_every_body_endpoint_gives_413_and_415(api: APIClient, settings: Any, target: str) -> None:
    session = create_session(api, title="kept")
    append(api, session["id"], status="in_progress")
    method, path = {
        "create": ("post", SESSIONS),
        "patch": ("patch", detail(session["id"])),
        "append": ("post", messages_url(session["id"])),
        "patch message": ("patch", f"{messages_url(session['id'])}1/"),
        "extend": ("post", f"{messages_url(session['id'])}1/extend/"),
        "truncate": ("post", f"{SESSIONS}{session['id']}/truncate/"),
    }[target]
    send = getattr(api, method)

    assert send(path, b"<xml/>", content_type="application/xml").status_code == 415
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    big = json.dumps({"title": "x" * 200, "role": "user", "content": "x" * 200}).encode()
    assert send(path, big, content_type="application/json").status_code == 413

    after = api.get(detail(session["id"])).json()
    assert (after["title"], after["message_count"]) == ("kept", 1)
    assert after["messages"][0]["content"] == "hello"
    assert len(api.get(SESSIONS).json()["results"]) == 1


def test_an_oversize_file_upload_is_a_413_before_it_is_read(api: APIClient, settings: Any) -> None:
    # Django applies DATA_UPLOAD_MAX_MEMORY_SIZE to form fields, not to files: the view checks the length.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    upload = SimpleUploadedFile("big.bin", b"x" * 5_000)

    response = api.post(SESSIONS, {"title": "with a file", "attachment": upload}, format="multipart")

    assert response.status_code == 413
    assert api.get(SESSIONS).json()["results"] == []


def test_too_many_form_fields_is_a_400(api: APIClient, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    body = "&".join(f"f{i}=x" for i in range(20))

    response = api.post(SESSIONS, body, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 400


def test_the_owner_never_comes_from_the_request(api: APIClient, bob_api: APIClient, bob: User) -> None:
    response = api.post(
        f"{SESSIONS}?owner=user:{bob.pk}",
        {"title": "mine", "owner": f"user:{bob.pk}"},
        format="json",
        headers={"X-Owner": f"user:{bob.pk}", "Owner": f"user:{bob.pk}"},
    )

    assert response.status_code == 201
    assert bob_api.get(detail(response.json()["id"])).status_code == 404
    assert api.get(detail(response.json()["id"])).status_code == 200


def test_list_pages_sessions_most_recently_active_first(api: APIClient) -> None:
    ids = []
    for i in range(5):
        # Activity is kept in milliseconds, and sessions active in the same one sort by id: keep
        # each create, and the append after them, in a millisecond of its own.
        time.sleep(0.002)
        ids.append(create_session(api, title=f"s{i}")["id"])
    time.sleep(0.002)
    append(api, ids[1])  # the most recently active now

    seen: list[str] = []
    url: str | None = f"{SESSIONS}?limit=2"
    pages = 0
    while url:
        response = api.get(url)
        assert response.status_code == 200
        page = response.json()
        assert set(page) == {"next", "previous", "results"}
        assert page["previous"] is None
        assert len(page["results"]) <= 2
        seen += [session["id"] for session in page["results"]]
        url = page["next"]
        pages += 1

    assert pages == 3
    assert seen == [ids[1], ids[4], ids[3], ids[2], ids[0]]
    assert "limit=2" in api.get(f"{SESSIONS}?limit=2").json()["next"]


def test_list_defaults_to_twenty(api: APIClient) -> None:
    for _ in range(21):
        create_session(api)

    page = api.get(SESSIONS).json()

    assert len(page["results"]) == 20
    assert page["next"] is not None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=%205", "limit"),  # " 5": Python's int() would take it
        ("limit=1_0", "limit"),
        ("limit=%EF%BC%95", "limit"),  # a fullwidth 5
        ("limit=5%20", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=" + "x" * 300, "cursor"),
    ],
)
def test_list_refuses_a_bad_limit_or_cursor(api: APIClient, query: str, field: str) -> None:
    response = api.get(f"{SESSIONS}?{query}")

    assert response.status_code == 400
    assert field in response.json()


def test_retrieve_gives_the_session_with_its_messages_in_order(api: APIClient) -> None:
    session = create_session(api, title="t")
    append(api, session["id"], "first")
    append(api, session["id"], "second", sources=[{"url": "https://example.com/a", "title": "A"}])

    response = api.get(detail(session["id"]))

    assert response.status_code == 200
    body = response.json()
    assert body["message_count"] == 2
    assert [m["content"] for m in body["messages"]] == ["first", "second"]
    assert [m["id"] for m in body["messages"]] == [1, 2]
    assert set(body["messages"][0]) == MESSAGE_KEYS
    assert body["messages"][1]["sources"] == [{"url": "https://example.com/a", "title": "A"}]


@pytest.mark.parametrize("bad_id", [MISSING_ID, "short", "has.dot", "x" * 300, "%00", "..", "🙂"])
def test_a_missing_or_malformed_id_is_the_same_404(api: APIClient, bad_id: str) -> None:
    expected = api.get(detail(MISSING_ID))

    response = api.get(detail(bad_id))

    assert response.status_code == 404
    assert response.json() == expected.json() == {"detail": "Session not found."}


def test_partial_update_changes_title_and_metadata(api: APIClient) -> None:
    session = create_session(api, title="old", metadata={"a": 1})

    response = api.patch(detail(session["id"]), {"title": "new"}, format="json")
    assert response.status_code == 200
    assert response.json()["title"] == "new"
    assert response.json()["metadata"] == {"a": 1}

    response = api.patch(detail(session["id"]), {"metadata": {"b": 2}}, format="json")
    assert response.status_code == 200
    assert response.json()["metadata"] == {"b": 2}
    assert api.get(detail(session["id"])).json()["title"] == "new"


def test_partial_update_refuses_bad_input(api: APIClient) -> None:
    session = create_session(api, title="kept")

    response = api.patch(detail(session["id"]), {"metadata": "nope"}, format="json")

    assert response.status_code == 400
    assert "metadata" in response.json()
    assert api.get(detail(session["id"])).json()["title"] == "kept"


def test_put_is_not_allowed(api: APIClient) -> None:
    session = create_session(api)

    assert api.put(detail(session["id"]), {"title": "x"}, format="json").status_code == 405


def test_delete_removes_the_session(api: APIClient) -> None:
    session = create_session(api)

    assert api.delete(detail(session["id"])).status_code == 204
    assert api.get(detail(session["id"])).status_code == 404
    assert api.delete(detail(session["id"])).status_code == 404
    assert api.get(SESSIONS).json()["results"] == []


# --------------------------------------------------------------------------------------------- messages


def test_append_returns_the_message_as_stored(api: APIClient) -> None:
    session = create_session(api)

    response = api.post(
        messages_url(session["id"]),
        {"role": "assistant", "content": "  spaced\n", "sources": [{"url": "https://e.x/1"}]},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["id"] == 1
    assert body["role"] == "assistant"
    assert body["content"] == "  spaced\n"  # kept verbatim
    assert body["sources"] == [{"url": "https://e.x/1"}]
    assert body["created_at"].endswith("Z")
    assert api.get(detail(session["id"])).json()["message_count"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "robot", "content": "x"}, "role"),
        ({"content": "x"}, "role"),
        ({"role": "user"}, "content"),
        ({"role": "user", "content": "x" * 32_001}, "content"),
        ({"role": "user", "content": "x", "sources": {"url": "not a list"}}, "sources"),
        ({"role": "user", "content": "x", "sources": ["not an object"]}, "sources"),
        ({"role": "user", "content": "x", "sources": [{}] * 51}, "sources"),  # MAX_SOURCES
        ({"role": "user", "content": "x", "sources": None}, "sources"),
    ],
)
def test_append_refuses_bad_input(api: APIClient, body: dict[str, Any], field: str) -> None:
    session = create_session(api)

    response = api.post(messages_url(session["id"]), body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert api.get(detail(session["id"])).json()["message_count"] == 0


def test_append_limits_come_from_settings(api: APIClient, settings: Any) -> None:
    session = create_session(api)
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGE_LENGTH": 5, "ROLES": ["bot"]}

    assert api.post(
        messages_url(session["id"]), {"role": "bot", "content": "123456"}, format="json"
    ).json() == {"content": ["Ensure this field has no more than 5 characters."]}
    assert (
        "role"
        in api.post(messages_url(session["id"]), {"role": "user", "content": "1"}, format="json").json()
    )
    assert (
        api.post(messages_url(session["id"]), {"role": "bot", "content": "12345"}, format="json").status_code
        == 201
    )


def test_append_to_a_full_session_is_a_409(api: APIClient, settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGES": 2}
    session = create_session(api)
    append(api, session["id"])
    append(api, session["id"])

    response = api.post(messages_url(session["id"]), {"role": "user", "content": "3"}, format="json")

    assert response.status_code == 409
    assert "start a new session" in response.json()["detail"]
    assert api.get(detail(session["id"])).json()["message_count"] == 2


def test_append_to_a_missing_session_is_a_404(api: APIClient) -> None:
    response = api.post(messages_url(MISSING_ID), {"role": "user", "content": "x"}, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found."}


def test_message_pages_go_forward_and_back(api: APIClient) -> None:
    session = create_session(api)
    for i in range(1, 8):
        append(api, session["id"], f"m{i}")

    first = api.get(f"{messages_url(session['id'])}?limit=3").json()
    assert [m["id"] for m in first["results"]] == [1, 2, 3]
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    assert [m["id"] for m in second["results"]] == [4, 5, 6]
    third = api.get(second["next"]).json()
    assert [m["id"] for m in third["results"]] == [7]
    assert third["next"] is None
    assert "limit=3" in third["previous"]

    back = api.get(third["previous"]).json()
    assert [m["id"] for m in back["results"]] == [4, 5, 6]
    assert [m["id"] for m in api.get(back["previous"]).json()["results"]] == [1, 2, 3]
    assert api.get(back["previous"]).json()["previous"] is None
    assert [m["id"] for m in api.get(back["next"]).json()["results"]] == [7]


def test_message_pages_default_to_twenty_and_an_empty_session_has_none(api: APIClient) -> None:
    session = create_session(api)
    assert api.get(messages_url(session["id"])).json() == {"next": None, "previous": None, "results": []}
    for i in range(21):
        append(api, session["id"], f"m{i}")

    page = api.get(messages_url(session["id"])).json()

    assert len(page["results"]) == 20
    assert page["next"] is not None


def test_a_new_message_shows_up_on_the_next_page(api: APIClient) -> None:
    session = create_session(api)
    append(api, session["id"], "one")
    page = api.get(f"{messages_url(session['id'])}?limit=1").json()
    assert page["next"] is None

    append(api, session["id"], "two")

    assert api.get(f"{messages_url(session['id'])}?limit=1").json()["next"] is not None


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=x", "cursor=bm90LWEtY3Vyc29y", "cursor=%%%"]
)
def test_message_pages_refuse_a_bad_limit_or_cursor(api: APIClient, query: str) -> None:
    session = create_session(api)

    response = api.get(f"{messages_url(session['id'])}?{query}")

    assert response.status_code == 400
    assert set(response.json()) <= {"limit", "cursor"}


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        b64("9" * 140 + ".AAAAAAAAAAAAAAAAAAAAAA"),  # a forged session cursor with a huge score
        b64("a" + "9" * 15),  # past any message position
        b64("b1099511627776"),
        b64("a-1"),
        b64("x1"),
        "====",
        "éé",
    ],
)
def test_forged_cursors_never_break_anything(api: APIClient, cursor: str) -> None:
    session = create_session(api)
    append(api, session["id"])

    for url in (SESSIONS, messages_url(session["id"])):
        response = api.get(url, {"cursor": cursor})
        assert response.status_code in (200, 400), (url, response.content)
        if response.status_code == 200:
            assert set(response.json()) == {"next", "previous", "results"}


def test_message_pages_of_a_missing_session_are_a_404(api: APIClient) -> None:
    assert api.get(messages_url(MISSING_ID)).status_code == 404


# --------------------------------------------------------------------------------------------- idempotency


def test_a_retried_append_with_the_same_key_appends_once(api: APIClient) -> None:
    session = create_session(api)
    body = {"role": "user", "content": "pay me"}
    headers = {"Idempotency-Key": "req-1"}

    first = api.post(messages_url(session["id"]), body, format="json", headers=headers)
    second = api.post(messages_url(session["id"]), body, format="json", headers=headers)

    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert api.get(detail(session["id"])).json()["message_count"] == 1


def test_the_same_key_with_another_body_is_a_422(api: APIClient) -> None:
    session = create_session(api)
    headers = {"Idempotency-Key": "req-1"}
    api.post(messages_url(session["id"]), {"role": "user", "content": "a"}, format="json", headers=headers)

    response = api.post(
        messages_url(session["id"]), {"role": "user", "content": "b"}, format="json", headers=headers
    )

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert api.get(detail(session["id"])).json()["message_count"] == 1


def test_four_concurrent_retries_append_once(store: ConversationStore, alice: User) -> None:
    setup = APIClient()
    setup.force_authenticate(alice)
    session = create_session(setup)
    barrier = threading.Barrier(4)
    responses: list[Any] = []

    def post() -> None:
        client = APIClient()
        client.force_authenticate(alice)
        barrier.wait(timeout=10)
        responses.append(
            client.post(
                messages_url(session["id"]),
                {"role": "user", "content": "once"},
                format="json",
                headers={"Idempotency-Key": "concurrent-1"},
            )
        )

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [r.status_code for r in responses] == [201] * 4
    assert {r.json()["id"] for r in responses} == {1}
    assert setup.get(detail(session["id"])).json()["message_count"] == 1


def test_a_retried_create_with_the_same_key_creates_once(api: APIClient) -> None:
    headers = {"Idempotency-Key": "create-1"}

    first = api.post(SESSIONS, {"title": "t"}, format="json", headers=headers)
    second = api.post(SESSIONS, {"title": "t"}, format="json", headers=headers)
    other = api.post(SESSIONS, {"title": "other"}, format="json", headers=headers)

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert other.status_code == 422
    assert len(api.get(SESSIONS).json()["results"]) == 1


def test_idempotency_keys_are_per_owner(api: APIClient, bob_api: APIClient) -> None:
    headers = {"Idempotency-Key": "same"}

    mine = api.post(SESSIONS, {"title": "t"}, format="json", headers=headers).json()
    theirs = bob_api.post(SESSIONS, {"title": "t"}, format="json", headers=headers).json()

    assert mine["id"] != theirs["id"]


@pytest.mark.parametrize("key", ["x" * 256, "caf\u00e9", "tab\there", ""])
def test_a_malformed_idempotency_key_is_a_400(api: APIClient, key: str) -> None:
    session = create_session(api)

    response = api.post(
        messages_url(session["id"]),
        {"role": "user", "content": "x"},
        format="json",
        headers={"Idempotency-Key": key},
    )

    assert response.status_code == 400
    assert list(response.json()) == ["Idempotency-Key"]
    assert api.get(detail(session["id"])).json()["message_count"] == 0


# --------------------------------------------------------------------------------------------- export


def test_export_json_is_a_download_of_the_transcript(api: APIClient) -> None:
    session = create_session(api, title="Refund")
    append(api, session["id"], "where is it?")

    response = api.get(f"{export_url(session['id'])}?format=json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="conversation-{session["id"]}.json"'
    body = streamed_json(response)
    assert body["title"] == "Refund"
    assert [m["content"] for m in body["messages"]] == ["where is it?"]
    default = streamed_json(api.get(export_url(session["id"])))  # JSON is the default
    assert {**default, "expires_at": None} == {**body, "expires_at": None}


def test_export_markdown_is_a_readable_transcript(api: APIClient) -> None:
    session = create_session(api, title="Refund *now*")
    append(api, session["id"], "where is it?\n## not a heading")
    append(
        api, session["id"], "sent", role="assistant", sources=[{"url": "https://e.x/o/7", "title": "Order 7"}]
    )

    response = api.get(f"{export_url(session['id'])}?format=markdown")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="conversation-{session["id"]}.md"'
    text = streamed(response).decode()
    assert text.startswith("# Refund \\*now\\*\n")
    assert "## 1. user" in text
    assert "> where is it?\n> ## not a heading" in text
    assert "## 2. assistant" in text
    assert "- [Order 7](https://e.x/o/7)" in text
    assert text.index("where is it?") < text.index("sent")


def test_export_follows_the_accept_header(api: APIClient) -> None:
    session = create_session(api)

    response = api.get(export_url(session["id"]), HTTP_ACCEPT="text/markdown")

    assert response["Content-Type"].startswith("text/markdown")


def test_export_of_a_missing_session_is_a_json_404_in_any_format(api: APIClient) -> None:
    response = api.get(f"{export_url(MISSING_ID)}?format=markdown")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Session not found."}
    assert not response.has_header("Content-Disposition")


def test_export_in_an_unknown_format_is_a_404(api: APIClient) -> None:
    session = create_session(api)

    assert api.get(f"{export_url(session['id'])}?format=xml").status_code == 404
    assert api.get(f"{export_url(session['id'])}?format=").status_code == 404


# --------------------------------------------------------------------------------------------- every endpoint


def endpoints(session_id: str) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body) of every operation on one session, plus the two on the collection.

    The message operations name message 1, which the sessions under test hold."""
    one = f"{messages_url(session_id)}1/"
    return [
        ("get", SESSIONS, None),
        ("post", SESSIONS, {"title": "t"}),
        ("get", detail(session_id), None),
        ("patch", detail(session_id), {"title": "changed"}),
        ("get", messages_url(session_id), None),
        ("post", messages_url(session_id), {"role": "user", "content": "intruder"}),
        (
            "post",
            messages_url(session_id),
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        ),
        ("get", one, None),
        ("patch", one, {"content": "rewritten", "status": "in_progress"}),
        ("post", f"{one}extend/", {"text": " and more"}),
        ("delete", one, None),
        ("post", f"{SESSIONS}{session_id}/truncate/", {"after": 0}),
        ("get", f"{SESSIONS}{session_id}/context/?max_tokens=1000", None),
        ("get", export_url(session_id), None),
        ("delete", detail(session_id), None),
    ]


def call(client: APIClient, method: str, path: str, body: Any) -> Any:
    request: Callable[..., Any] = getattr(client, method)
    return request(path, body, format="json") if body is not None else request(path)


def test_isolation_matrix(api: APIClient, bob_api: APIClient) -> None:
    session = create_session(api, title="alice's", metadata={"secret": 1})
    append(api, session["id"], "private")
    before = api.get(detail(session["id"])).json()
    missing_body = bob_api.get(detail(MISSING_ID)).json()

    for method, path, body in endpoints(session["id"])[2:]:
        response = call(bob_api, method, path, body)
        assert response.status_code == 404, (method, path)
        assert response.json() == missing_body, (method, path)

    assert bob_api.get(SESSIONS).json()["results"] == []
    after = api.get(detail(session["id"])).json()
    assert {k: v for k, v in after.items() if k not in ("expires_at",)} == {
        k: v for k, v in before.items() if k not in ("expires_at",)
    }


@pytest.mark.parametrize("index", range(len(endpoints(MISSING_ID))))
def test_anonymous_gets_401_when_basic_auth_comes_first(
    api: APIClient, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    # DRF binds DEFAULT_AUTHENTICATION_CLASSES to views at import time, so set the view's own list.
    monkeypatch.setattr(
        SessionViewSet, "authentication_classes", [BasicAuthentication, SessionAuthentication]
    )
    session = create_session(api)
    method, path, body = endpoints(session["id"])[index]

    response = call(APIClient(), method, path, body)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    after = api.get(detail(session["id"])).json()
    assert (after["title"], after["message_count"]) == (session["title"], 0)


def test_anonymous_gets_403_when_session_auth_comes_first(api: APIClient) -> None:
    # DRF's default order (SessionAuthentication first) has no challenge to send, so it answers 403.
    session = create_session(api)

    for method, path, body in endpoints(session["id"]):
        response = call(APIClient(), method, path, body)
        assert response.status_code == 403, (method, path)
        assert response.json() == {"detail": "Authentication credentials were not provided."}

    after = api.get(detail(session["id"])).json()
    assert (after["title"], after["message_count"]) == (session["title"], 0)


def test_http_basic_and_session_logins_work(api: APIClient, alice: User) -> None:
    session = create_session(api)
    basic = APIClient()
    basic.credentials(HTTP_AUTHORIZATION="Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ=")  # alice:alice-password
    browser = APIClient(enforce_csrf_checks=True)
    browser.login(username="alice", password="alice-password")

    assert basic.get(detail(session["id"])).status_code == 200
    assert browser.get(detail(session["id"])).status_code == 200
    assert (
        browser.post(messages_url(session["id"]), {"role": "user", "content": "x"}).status_code == 403
    )  # no CSRF


def test_anonymous_visitors_get_their_own_sessions_when_allowed(
    store: ConversationStore, settings: Any
) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "ALLOW_ANONYMOUS": True}
    visitor, other = APIClient(), APIClient()

    session = create_session(visitor, title="anon")
    append(visitor, session["id"], "hi")

    assert visitor.get(detail(session["id"])).json()["message_count"] == 1
    assert [s["id"] for s in visitor.get(SESSIONS).json()["results"]] == [session["id"]]
    assert other.get(detail(session["id"])).status_code == 404
    assert other.get(SESSIONS).json()["results"] == []


def test_anonymous_writes_need_a_csrf_token(store: ConversationStore, settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "ALLOW_ANONYMOUS": True}
    visitor = APIClient(enforce_csrf_checks=True)

    response = visitor.post(SESSIONS, {"title": "x"}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_a_custom_owner_resolver_decides(api: APIClient, settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "OWNER_RESOLVER": "tests.test_views.nobody"}

    response = api.get(SESSIONS)

    assert response.status_code == 403  # authenticated, but the resolver gives no owner
    assert response.json() == {"detail": "No conversation owner could be determined for this request."}


def nobody(request: Any) -> None:
    return None


@pytest.mark.parametrize("index", range(len(endpoints(MISSING_ID))))
def test_redis_unreachable_is_a_fast_503_with_retry_after(api: APIClient, settings: Any, index: int) -> None:
    session = create_session(api)
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "CACHE_ALIAS": "unreachable"}
    method, path, body = endpoints(session["id"])[index]

    started = time.monotonic()
    response = call(api, method, path, body)
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "unavailable" in response.json()["detail"]
    assert elapsed < 5  # generous: the cache's timeouts are 0.5 s


def test_redis_out_of_memory_is_a_503_too(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    session = create_session(api)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise StoreOutOfMemory("OOM command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr(ConversationStore, "append_message", refuse)
    response = api.post(messages_url(session["id"]), {"role": "user", "content": "x"}, format="json")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"


def test_options_describes_the_forms(api: APIClient) -> None:
    session = create_session(api)

    listing = api.options(SESSIONS).json()
    messages = api.options(messages_url(session["id"])).json()

    assert set(listing["actions"]["POST"]) == {"title", "metadata"}
    assert [c["value"] for c in messages["actions"]["POST"]["role"]["choices"]] == [
        "user",
        "assistant",
        "system",
        "tool",
    ]


# --------------------------------------------------------------------------------------------- throttling


@pytest.mark.parametrize("index", range(len(endpoints(MISSING_ID))))
def test_the_conversations_scope_throttles_with_retry_after(
    api: APIClient, settings: Any, key_prefix: str, index: int
) -> None:
    session = create_session(api)
    append(api, session["id"], status="in_progress")  # message 1, which extend/ takes
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"conversations": "1/min"},
    }
    method, path, body = endpoints(session["id"])[index]

    assert call(api, method, path, body).status_code < 400
    response = call(api, method, path, body)

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60


def test_the_throttle_counts_each_user_apart_under_the_key_prefix(
    api: APIClient, bob_api: APIClient, settings: Any, key_prefix: str, redis_client: Any
) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"conversations": "3/min"},
    }

    alice_statuses = [api.get(SESSIONS).status_code for _ in range(5)]
    bob_statuses = [bob_api.get(SESSIONS).status_code for _ in range(2)]

    assert alice_statuses == [200, 200, 200, 429, 429]
    assert bob_statuses == [200, 200]
    counters = sorted(redis_client.scan_iter(match=f"{key_prefix}:t:*"))
    assert len(counters) == 2  # one per user, with a TTL of at most the window
    assert all(0 < redis_client.pttl(key) <= 60_000 for key in counters)
    assert sorted(int(redis_client.get(key)) for key in counters) == [2, 3]


def test_without_a_rate_nothing_is_throttled(api: APIClient) -> None:
    for _ in range(30):
        assert api.get(SESSIONS).status_code == 200


def test_the_throttle_does_not_use_the_default_cache(api: APIClient, settings: Any, key_prefix: str) -> None:
    settings.CACHES = {
        "default": settings.CACHES["unreachable"],
        "store": settings.CACHES["default"],
        "unreachable": settings.CACHES["unreachable"],
    }
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "CACHE_ALIAS": "store"}
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"conversations": "5/min"},
    }

    assert api.get(SESSIONS).status_code == 200  # counted in the store's Redis


def test_an_unreachable_throttle_redis_is_a_503(api: APIClient, settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "CACHE_ALIAS": "unreachable"}
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"conversations": "5/min"},
    }

    response = api.get(SESSIONS)

    assert response.status_code == 503
    assert response["Retry-After"] == "5"


# --------------------------------------------------------------------------------------------- browsable API


def test_the_browsable_api_offers_the_forms(api: APIClient) -> None:
    session = create_session(api, title="Browsable")

    listing = api.get(SESSIONS, HTTP_ACCEPT="text/html")
    page = api.get(messages_url(session["id"]), HTTP_ACCEPT="text/html")
    one = api.get(detail(session["id"]), HTTP_ACCEPT="text/html")
    export = api.get(export_url(session["id"]), HTTP_ACCEPT="text/html")

    assert listing.status_code == page.status_code == one.status_code == export.status_code == 200
    assert 'name="title"' in listing.content.decode()
    assert 'name="metadata"' in listing.content.decode()
    html = page.content.decode()
    for name in ("role", "content", "sources"):
        assert f'name="{name}"' in html
    assert "Browsable" in one.content.decode()
    assert not export.has_header("Content-Disposition")


def test_html_form_posts_work(api: APIClient) -> None:
    created = api.post(SESSIONS, {"title": "from a form", "metadata": ""})  # multipart, like a browser
    assert created.status_code == 201, created.content
    session_id = created.json()["id"]

    message = api.post(messages_url(session_id), {"role": "user", "content": "typed", "sources": ""})
    assert message.status_code == 201, message.content
    with_sources = api.post(
        messages_url(session_id), {"role": "user", "content": "cited", "sources": '[{"url": "https://e.x"}]'}
    )
    assert with_sources.json()["sources"] == [{"url": "https://e.x"}]
    bad = api.post(messages_url(session_id), {"role": "user", "content": "x", "sources": "[oops"})
    assert bad.status_code == 400
    assert "sources" in bad.json()


# ------------------------------------------------------------------------------ found from outside

TIME_SHAPE = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")


def test_a_time_on_a_whole_second_keeps_its_milliseconds() -> None:
    moment = datetime(2026, 12, 1, 19, 34, 56, tzinfo=UTC)
    message = Message(id=1, role="user", content="x", sources=[], created_at=moment)

    assert MessageSerializer(message).data["created_at"] == "2026-12-01T19:34:56.000Z"
    assert (
        MessageSerializer(replace(message, created_at=moment.replace(microsecond=7000))).data["created_at"]
        == "2026-12-01T19:34:56.007Z"
    )


def test_every_time_in_every_response_has_one_shape(api: APIClient) -> None:
    session = create_session(api, title="times")
    message = append(api, session["id"])
    responses = [
        session,
        message,
        api.get(SESSIONS).json()["results"][0],
        api.get(detail(session["id"])).json(),
        streamed_json(api.get(export_url(session["id"]))),
        api.get(messages_url(session["id"])).json()["results"][0],
    ]
    times = [value for body in responses for key, value in _walk(body) if key.endswith("_at")]

    assert len(times) >= 15
    assert all(TIME_SHAPE.match(value) for value in times), times


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        for key, child in value.items():
            yield key, child
            yield from _walk(child)
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child)


@pytest.mark.parametrize(
    ("role", "named"), [(["user"], "a list"), ({"r": 1}, "an object"), (1, "a number"), (True, "a boolean")]
)
def test_a_role_of_another_json_type_is_named_not_printed_as_python(
    api: APIClient, role: Any, named: str
) -> None:
    session = create_session(api)

    response = api.post(messages_url(session["id"]), {"role": role, "content": "x"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"role": [f"Expected a string, got {named}."]}


def test_a_content_of_another_json_type_is_named(api: APIClient) -> None:
    session = create_session(api)

    response = api.post(messages_url(session["id"]), {"role": "user", "content": ["x"]}, format="json")

    assert response.json() == {"content": ["Expected a string, got a list."]}


@pytest.mark.parametrize("suffix", ["", "messages/", "export/"])
def test_an_id_with_an_encoded_slash_gets_the_json_404(api: APIClient, suffix: str) -> None:
    missing = api.get(f"{SESSIONS}{MISSING_ID}/{suffix}")

    slashed = api.get(f"{SESSIONS}abc%2Fdef/{suffix}")

    assert slashed.status_code == missing.status_code == 404
    assert slashed.json() == missing.json() == {"detail": "Session not found."}
    assert slashed["Content-Type"] == missing["Content-Type"]


def test_a_post_to_an_id_with_an_encoded_slash_gets_the_json_404(api: APIClient) -> None:
    response = api.post(f"{SESSIONS}a%2Fb/messages/", {"role": "user", "content": "x"}, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found."}


def _chunked(api: APIClient, path: str, body: bytes, *, terminated: bool) -> Any:
    # What gunicorn hands Django for "Transfer-Encoding: chunked": the de-chunked body, no
    # Content-Length, and wsgi.input_terminated (runserver's wsgiref sets neither).
    return api.generic(
        "POST",
        path,
        body,
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
        **{"wsgi.input": io.BytesIO(body)},  # a stream that ends with the body, as gunicorn's does
        **({"wsgi.input_terminated": True} if terminated else {}),
    )


def test_a_chunked_body_is_read_where_the_server_ends_it(api: APIClient) -> None:
    session = create_session(api)
    body = json.dumps({"role": "user", "content": "sent in chunks"}).encode()

    response = _chunked(api, messages_url(session["id"]), body, terminated=True)

    assert response.status_code == 201, response.content
    assert response.json()["content"] == "sent in chunks"


def test_a_chunked_body_is_411_where_the_server_cannot_end_it(api: APIClient) -> None:
    response = _chunked(api, SESSIONS, b'{"title": "lost"}', terminated=False)

    assert response.status_code == 411
    assert "Content-Length" in response.json()["detail"]
    assert api.get(SESSIONS).json()["results"] == []  # nothing created


def test_a_chunked_body_over_the_size_limit_is_413(api: APIClient, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    session = create_session(api)
    body = json.dumps({"role": "user", "content": "x" * 200}).encode()

    response = _chunked(api, messages_url(session["id"]), body, terminated=True)

    assert response.status_code == 413

"""The message lifecycle over HTTP (issue 12): one message, extend, truncate, context, batch appends, the
bounded session detail and the streamed export, each with its statuses; on the real Redis."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from conversations.serializers import MessageSerializer, SessionSerializer, message_json, session_json
from conversations.store import ConversationStore
from tests.test_views import (  # alice and api: the fixtures, shared
    MESSAGE_KEYS,
    MISSING_ID,
    SESSIONS,
    alice,
    api,
    append,
    create_session,
    detail,
    export_url,
    messages_url,
    streamed,
    streamed_json,
)

pytestmark = [pytest.mark.redis, pytest.mark.django_db]

__all__ = ["alice", "api"]  # fixtures imported for pytest, not unused


def one(session_id: str, message_id: int | str) -> str:
    return f"{messages_url(session_id)}{message_id}/"


def extend_url(session_id: str, message_id: int | str) -> str:
    return f"{one(session_id, message_id)}extend/"


def truncate_url(session_id: str) -> str:
    return f"{SESSIONS}{session_id}/truncate/"


def context_url(session_id: str) -> str:
    return f"{SESSIONS}{session_id}/context/"


def contents(api: APIClient, session_id: str) -> list[str]:
    return [m["content"] for m in api.get(messages_url(session_id), {"limit": 100}).json()["results"]]


MESSAGE_404 = {"detail": "Message not found."}
SESSION_404 = {"detail": "Session not found."}


# --------------------------------------------------------------------------------------------- one message


def test_get_one_message(api: APIClient) -> None:
    session = create_session(api)
    sent = append(api, session["id"], "hi", data={"tool": "search"}, token_count=3)

    response = api.get(one(session["id"], sent["id"]))

    assert response.status_code == 200
    assert response.json() == sent
    assert set(sent) == MESSAGE_KEYS
    assert (sent["status"], sent["data"], sent["token_count"]) == ("completed", {"tool": "search"}, 3)


@pytest.mark.parametrize("message_id", ["2", "0", "abc", "-1", "1.0", "99999999999999999"])
def test_a_missing_or_malformed_message_is_a_404(api: APIClient, message_id: str) -> None:
    session = create_session(api)
    append(api, session["id"])

    for method in ("get", "patch", "delete"):
        response = getattr(api, method)(one(session["id"], message_id), {"content": "x"}, format="json")
        assert response.status_code == 404, (method, message_id)
        assert response.json() == MESSAGE_404
    response = api.post(extend_url(session["id"], message_id), {"text": "x"}, format="json")
    assert (response.status_code, response.json()) == (404, MESSAGE_404)


def test_a_message_of_a_missing_session_is_the_session_404(api: APIClient) -> None:
    for path in (one(MISSING_ID, 1), one("not-an-id", 1), one("not-an-id", "abc")):
        response = api.get(path)
        assert (response.status_code, response.json()) == (404, SESSION_404), path


def test_patch_changes_only_the_fields_sent(api: APIClient) -> None:
    session = create_session(api)
    sent = append(api, session["id"], "draft", data={"a": 1}, token_count=2)
    path = one(session["id"], sent["id"])

    changed = api.patch(path, {"content": "final", "token_count": 5}, format="json")
    status = api.patch(path, {"status": "incomplete", "data": None}, format="json")
    nothing = api.patch(path, {}, format="json")

    assert changed.status_code == 200
    assert {k: changed.json()[k] for k in ("content", "token_count", "data", "status")} == {
        "content": "final",
        "token_count": 5,
        "data": {"a": 1},
        "status": "completed",
    }
    assert (status.json()["status"], status.json()["data"], status.json()["content"]) == (
        "incomplete",
        {},
        "final",
    )
    assert nothing.status_code == 200
    assert nothing.json() == api.get(path).json() == status.json()
    assert nothing.json()["id"] == sent["id"]
    assert nothing.json()["created_at"] == sent["created_at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "done"}, "status"),
        ({"status": None}, "status"),
        ({"token_count": -1}, "token_count"),
        ({"token_count": 2**53 + 1}, "token_count"),
        ({"token_count": "many"}, "token_count"),
        ({"data": [1, 2]}, "data"),
        ({"data": {"deep": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}}, "data"),
        ({"content": 7}, "content"),
    ],
)
def test_patch_refuses_bad_input_and_changes_nothing(
    api: APIClient, body: dict[str, Any], field: str
) -> None:
    session = create_session(api)
    sent = append(api, session["id"], "kept", data={"k": 1})

    response = api.patch(one(session["id"], sent["id"]), body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert api.get(one(session["id"], sent["id"])).json() == sent


def test_patch_data_over_its_size_limit_is_a_400(api: APIClient, settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGE_DATA_BYTES": 20}
    session = create_session(api)
    sent = append(api, session["id"])

    response = api.patch(one(session["id"], sent["id"]), {"data": {"x": "y" * 50}}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["data"]


def test_delete_removes_exactly_that_message(api: APIClient) -> None:
    session = create_session(api)
    for text in ("a", "b", "c"):
        append(api, session["id"], text)

    deleted = api.delete(one(session["id"], 2))
    again = api.delete(one(session["id"], 2))

    assert deleted.status_code == 204
    assert (again.status_code, again.json()) == (404, MESSAGE_404)
    assert api.get(one(session["id"], 2)).status_code == 404
    page = api.get(messages_url(session["id"])).json()["results"]
    assert [(m["id"], m["content"]) for m in page] == [(1, "a"), (3, "c")]
    assert append(api, session["id"], "d")["id"] == 4  # ids are never reused
    assert api.get(detail(session["id"])).json()["message_count"] == 3


# --------------------------------------------------------------------------------------------- extend


def test_extend_streams_text_into_an_in_progress_message(api: APIClient) -> None:
    session = create_session(api)
    started = append(api, session["id"], "Hel", role="assistant", status="in_progress")

    first = api.post(extend_url(session["id"], started["id"]), {"text": "lo, "}, format="json")
    second = api.post(extend_url(session["id"], started["id"]), {"text": "wörld"}, format="json")
    done = api.patch(one(session["id"], started["id"]), {"status": "completed"}, format="json")
    late = api.post(extend_url(session["id"], started["id"]), {"text": "!"}, format="json")

    assert first.status_code == second.status_code == 200
    assert second.json()["content"] == "Hello, wörld"
    assert second.json()["status"] == "in_progress"
    assert done.json()["content"] == "Hello, wörld"
    assert late.status_code == 409
    assert late.json() == {"detail": "Only a message whose status is in_progress can be extended."}
    assert api.get(one(session["id"], started["id"])).json()["content"] == "Hello, wörld"


def test_extending_a_finished_message_is_a_409_with_its_code(api: APIClient) -> None:
    session = create_session(api)
    for status in ("completed", "incomplete"):
        sent = append(api, session["id"], "done", status=status)
        response = api.post(extend_url(session["id"], sent["id"]), {"text": "more"}, format="json")
        assert response.status_code == 409
        assert response.data["detail"].code == "message_not_in_progress"


@pytest.mark.parametrize("body", [{}, {"text": 5}, {"text": None}, {"text": "\ud800"}])
def test_extend_refuses_a_bad_body(api: APIClient, body: dict[str, Any]) -> None:
    session = create_session(api)
    sent = append(api, session["id"], "x", status="in_progress")

    # Sent as JSON text (the test client cannot encode a lone surrogate itself).
    response = api.post(
        extend_url(session["id"], sent["id"]), json.dumps(body), content_type="application/json"
    )

    assert response.status_code == 400
    assert list(response.json()) == ["text"]
    assert api.get(one(session["id"], sent["id"])).json()["content"] == "x"


def test_extend_past_the_length_limit_is_a_400(api: APIClient, settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGE_LENGTH": 10}
    session = create_session(api)
    sent = append(api, session["id"], "12345678", status="in_progress")

    too_long = api.post(extend_url(session["id"], sent["id"]), {"text": "x" * 11}, format="json")
    fits = api.post(extend_url(session["id"], sent["id"]), {"text": "90"}, format="json")

    assert too_long.status_code == 400
    assert fits.json()["content"] == "1234567890"


# --------------------------------------------------------------------------------------------- truncate


def test_truncate_removes_every_message_after_one(api: APIClient) -> None:
    session = create_session(api)
    for text in "abcde":
        append(api, session["id"], text)

    response = api.post(truncate_url(session["id"]), {"after": 2}, format="json")
    again = api.post(truncate_url(session["id"]), {"after": 2}, format="json")

    assert (response.status_code, response.json()) == (200, {"removed": 3})
    assert again.json() == {"removed": 0}
    assert contents(api, session["id"]) == ["a", "b"]
    assert append(api, session["id"], "regenerated")["id"] == 6
    assert api.post(truncate_url(session["id"]), {"after": 0}, format="json").json() == {"removed": 3}
    assert api.get(detail(session["id"])).json()["message_count"] == 0


@pytest.mark.parametrize("body", [{}, {"after": -1}, {"after": "two"}, {"after": None}, {"after": 2**41}])
def test_truncate_refuses_a_bad_after(api: APIClient, body: dict[str, Any]) -> None:
    session = create_session(api)
    append(api, session["id"])

    response = api.post(truncate_url(session["id"]), body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["after"]
    assert contents(api, session["id"]) == ["hello"]


def test_truncate_of_a_missing_session_is_a_404(api: APIClient) -> None:
    response = api.post(truncate_url(MISSING_ID), {"after": 0}, format="json")

    assert (response.status_code, response.json()) == (404, SESSION_404)


# --------------------------------------------------------------------------------------------- context


def test_context_gives_the_newest_messages_that_fit_oldest_first(api: APIClient) -> None:
    session = create_session(api)
    append(api, session["id"], "be brief", role="system", token_count=2)
    for n in range(1, 6):
        append(api, session["id"], f"turn {n}", token_count=10)

    response = api.get(context_url(session["id"]), {"max_tokens": 32})
    without_system = api.get(context_url(session["id"]), {"max_tokens": 32, "include_system": "false"})

    assert response.status_code == 200
    assert [m["content"] for m in response.json()] == ["be brief", "turn 3", "turn 4", "turn 5"]
    assert set(response.json()[0]) == MESSAGE_KEYS
    assert [m["content"] for m in without_system.json()] == ["turn 3", "turn 4", "turn 5"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?max_tokens=",
        "?max_tokens=0",
        "?max_tokens=-3",
        "?max_tokens=ten",
        "?max_tokens=1e3",
        "?max_tokens=9007199254740993",
        "?max_tokens=5&include_system=maybe",
    ],
)
def test_context_refuses_a_bad_query(api: APIClient, query: str) -> None:
    session = create_session(api)

    response = api.get(context_url(session["id"]) + query)

    assert response.status_code == 400
    assert set(response.json()) <= {"max_tokens", "include_system"}


def test_context_of_a_missing_session_is_a_404(api: APIClient) -> None:
    response = api.get(context_url(MISSING_ID), {"max_tokens": 10})

    assert (response.status_code, response.json()) == (404, SESSION_404)


# --------------------------------------------------------------------------------------------- appends


def test_append_takes_status_data_and_token_count(api: APIClient) -> None:
    session = create_session(api)

    sent = append(
        api, session["id"], "", role="assistant", status="in_progress", data={"u": [1]}, token_count=0
    )
    plain = append(api, session["id"], "x")

    assert (sent["status"], sent["data"], sent["token_count"]) == ("in_progress", {"u": [1]}, 0)
    assert (plain["status"], plain["data"], plain["token_count"]) == ("completed", {}, None)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"role": "robot", "content": "x"}, {"role": ['"robot" is not a valid choice.']}),
        ({"role": "user", "content": "x", "sources": None}, {"sources": ["This field may not be null."]}),
        ({"role": "user", "content": "x", "status": None}, {"status": ["This field may not be null."]}),
        ({"role": "user", "content": "x", "status": "done"}, {"status": ['"done" is not a valid choice.']}),
        (
            {"role": "user", "content": "\ud800"},
            {"content": ["Surrogate characters are not allowed: U+D800."]},
        ),
        (
            {"role": "user", "content": "x", "token_count": True},
            {"token_count": ["A valid integer is required."]},
        ),
        (
            {"role": "user", "content": "x", "token_count": -1},
            {"token_count": ["Ensure this value is greater than or equal to 0."]},
        ),
    ],
)
def test_append_field_errors_are_drf_s_own(api: APIClient, body: dict[str, Any], errors: Any) -> None:
    session = create_session(api)

    raw = json.dumps(body)  # JSON text: the test client cannot encode a lone surrogate itself
    response = api.post(messages_url(session["id"]), raw, content_type="application/json")
    to_a_missing_session = api.post(messages_url(MISSING_ID), raw, content_type="application/json")

    assert (response.status_code, response.json()) == (400, errors)
    assert (to_a_missing_session.status_code, to_a_missing_session.json()) == (400, errors)  # body first
    assert contents(api, session["id"]) == []


def test_append_takes_a_token_count_written_as_text_like_a_form(api: APIClient) -> None:
    session = create_session(api)

    sent = api.post(
        messages_url(session["id"]), {"role": "user", "content": "x", "token_count": "12"}, format="json"
    )
    form = api.post(
        messages_url(session["id"]), {"role": "user", "content": "y", "token_count": "4", "data": ""}
    )

    assert sent.json()["token_count"] == 12
    assert form.status_code == 201, form.content
    assert (form.json()["token_count"], form.json()["data"]) == (4, {})


def test_a_batch_appends_all_with_consecutive_ids(api: APIClient) -> None:
    session = create_session(api)
    append(api, session["id"], "first")
    batch = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "sources": [{"url": "https://e.x"}], "token_count": 1},
        {"role": "tool", "content": "", "data": {"call": "f"}, "status": "incomplete", "ignored": 1},
    ]

    response = api.post(messages_url(session["id"]), batch, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert [m["id"] for m in body] == [2, 3, 4]
    assert [m["content"] for m in body] == ["q", "a", ""]
    assert body[1]["sources"] == [{"url": "https://e.x"}]
    assert (body[2]["data"], body[2]["status"]) == ({"call": "f"}, "incomplete")
    assert contents(api, session["id"]) == ["first", "q", "a", ""]


@pytest.mark.parametrize(
    ("batch", "errors"),
    [
        (
            [{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}],
            [{}, {"role": ['"robot" is not a valid choice.']}],
        ),
        ([{"role": "user"}], [{"content": ["This field is required."]}]),
        (
            [{"role": "user", "content": "x"}, "text"],
            [{}, {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}],
        ),
        ([], {"non_field_errors": ["Give at least one message."]}),
    ],
)
def test_a_batch_with_a_bad_message_appends_nothing(api: APIClient, batch: Any, errors: Any) -> None:
    session = create_session(api)

    response = api.post(messages_url(session["id"]), batch, format="json")

    assert (response.status_code, response.json()) == (400, errors)
    assert contents(api, session["id"]) == []


def test_a_batch_refused_by_the_store_names_the_message(api: APIClient, settings: Any) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_SOURCES": 1}
    session = create_session(api)
    two_sources = [{"url": "https://a.x"}, {"url": "https://b.x"}]

    response = api.post(
        messages_url(session["id"]),
        [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "user", "content": "c", "sources": two_sources},
        ],
        format="json",
    )
    alone = api.post(
        messages_url(session["id"]), [{"role": "user", "content": "c", "sources": [1]}], format="json"
    )

    assert response.status_code == 400
    assert response.json()[:2] == [{}, {}]
    assert list(response.json()[2]) == ["sources"]
    assert alone.status_code == 400
    assert len(alone.json()) == 1
    assert list(alone.json()[0]) == ["sources"]
    assert contents(api, session["id"]) == []


def test_a_batch_holds_at_most_100_messages(api: APIClient) -> None:
    session = create_session(api)
    many = [{"role": "user", "content": str(n)} for n in range(101)]

    too_many = api.post(messages_url(session["id"]), many, format="json")
    enough = api.post(messages_url(session["id"]), many[:100], format="json")

    assert too_many.status_code == 400
    assert too_many.json() == {"non_field_errors": ["At most 100 messages in one request."]}
    assert enough.status_code == 201
    assert len(enough.json()) == 100


def test_a_batch_into_a_nearly_full_session_is_a_409_and_appends_nothing(
    api: APIClient, settings: Any
) -> None:
    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "MAX_MESSAGES": 3}
    session = create_session(api)
    append(api, session["id"])

    response = api.post(messages_url(session["id"]), [{"role": "user", "content": "x"}] * 3, format="json")

    assert response.status_code == 409
    assert contents(api, session["id"]) == ["hello"]


def test_a_retried_batch_with_the_same_key_appends_once(api: APIClient) -> None:
    session = create_session(api)
    batch = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    headers = {"HTTP_IDEMPOTENCY_KEY": "batch-1"}

    first = api.post(messages_url(session["id"]), batch, format="json", **headers)
    retry = api.post(messages_url(session["id"]), batch, format="json", **headers)
    other = api.post(messages_url(session["id"]), batch[:1], format="json", **headers)

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert other.status_code == 422
    assert contents(api, session["id"]) == ["a", "b"]


def test_an_idempotency_key_whose_message_was_removed_is_a_422(api: APIClient) -> None:
    session = create_session(api)
    body = {"role": "user", "content": "once"}
    headers = {"HTTP_IDEMPOTENCY_KEY": "k-removed"}
    first = api.post(messages_url(session["id"]), body, format="json", **headers)
    assert api.delete(one(session["id"], first.json()["id"])).status_code == 204

    retry = api.post(messages_url(session["id"]), body, format="json", **headers)

    assert retry.status_code == 422
    assert retry.data["detail"].code == "idempotency_key_reused"
    assert contents(api, session["id"]) == []


# --------------------------------------------------------------------------------------------- bounded reads


def test_a_session_carries_its_newest_50_messages_and_says_so(
    api: APIClient, store: ConversationStore, alice: User
) -> None:
    session = create_session(api)
    owner = f"user:{alice.pk}"
    store.append_messages(
        session["id"], [{"role": "user", "content": str(n)} for n in range(1, 61)], owner=owner
    )

    body = api.get(detail(session["id"])).json()

    assert body["message_count"] == 60
    assert [m["id"] for m in body["messages"]] == list(range(11, 61))
    assert body["messages_complete"] is False
    assert body["messages_url"] == f"http://testserver{messages_url(session['id'])}"
    earlier = api.get(body["earlier_messages_url"] + "&limit=100").json()
    assert [m["id"] for m in earlier["results"]] == list(range(1, 11))
    first_page = api.get(body["messages_url"]).json()
    assert [m["id"] for m in first_page["results"]] == list(range(1, 21))


def test_a_short_session_is_complete(api: APIClient) -> None:
    session = create_session(api)
    append(api, session["id"])
    empty = create_session(api)

    body = api.get(detail(session["id"])).json()
    nothing = api.get(detail(empty["id"])).json()

    assert (body["messages_complete"], body["earlier_messages_url"]) == (True, None)
    assert (nothing["messages"], nothing["messages_complete"], nothing["earlier_messages_url"]) == (
        [],
        True,
        None,
    )


def _fill(store: ConversationStore, session_id: str, owner: str, count: int) -> None:
    text = "lorem ipsum dolor sit amet, " * 36  # 1,008 characters
    for start in range(0, count, 100):
        batch = [{"role": "user", "content": f"{n} {text}"} for n in range(start, start + 100)]
        store.append_messages(session_id, batch, owner=owner)


def _export_peak(api: APIClient, session_id: str, fmt: str) -> tuple[int, int]:
    """(peak bytes allocated while the export streams, size of the document)."""
    response = api.get(export_url(session_id), {"format": fmt})
    assert response.status_code == 200
    assert response.streaming
    size = 0
    tracemalloc.start()
    try:
        for chunk in response.streaming_content:
            size += len(chunk)
        return tracemalloc.get_traced_memory()[1], size
    finally:
        tracemalloc.stop()


def test_the_export_streams_a_long_session_in_bounded_memory(
    api: APIClient, store: ConversationStore, alice: User
) -> None:
    owner = f"user:{alice.pk}"
    short, long = create_session(api, title="short"), create_session(api, title="long")
    _fill(store, short["id"], owner, 1_000)
    _fill(store, long["id"], owner, 6_000)

    for fmt in ("json", "markdown"):
        short_peak, short_size = _export_peak(api, short["id"], fmt)
        long_peak, long_size = _export_peak(api, long["id"], fmt)
        assert long_size > 6_000_000, fmt
        assert long_size > 5.5 * short_size, fmt
        # Six times the messages, the same memory: one window's worth, never the whole document.
        assert long_peak < 1.25 * short_peak + 200_000, (fmt, short_peak, long_peak)
        assert long_peak < long_size / 3, (fmt, long_peak, long_size)
    document = streamed_json(api.get(export_url(long["id"])))
    assert document["message_count"] == 6_000
    assert [m["id"] for m in document["messages"]] == list(range(1, 6_001))
    markdown = streamed(api.get(export_url(long["id"]), {"format": "markdown"})).decode()
    assert markdown.count("\n## ") == 6_000
    assert markdown.rstrip().endswith("lorem ipsum dolor sit amet,")


def test_the_export_equals_the_transcript_the_renderers_give(api: APIClient) -> None:
    from conversations.renderers import MarkdownRenderer

    session = create_session(api, title="Same", metadata={"n": 1.5})
    append(api, session["id"], "line one\n\nline\u2028two", sources=[{"url": "https://e.x", "title": "E"}])
    append(api, session["id"], "ünïcode", role="assistant", data={"x": [1, None]})
    whole = api.get(detail(session["id"])).json()
    transcript = {k: v for k, v in whole.items() if not k.startswith(("messages_", "earlier_"))}

    exported = streamed(api.get(export_url(session["id"])))
    markdown = streamed(api.get(export_url(session["id"]), {"format": "markdown"})).decode()

    assert json.loads(exported) == transcript
    assert b"\\u2028" in exported  # escaped, as DRF's JSONRenderer escapes it everywhere
    assert markdown == MarkdownRenderer().render_transcript(transcript)


def test_an_empty_session_exports(api: APIClient) -> None:
    session = create_session(api)

    document = streamed_json(api.get(export_url(session["id"])))

    assert (document["messages"], document["message_count"]) == ([], 0)


# --------------------------------------------------------------------------------------------- the JSON


def test_the_direct_json_equals_the_serializers(
    api: APIClient, store: ConversationStore, alice: User
) -> None:
    session = create_session(api, title="t", metadata={"a": [1]})
    append(api, session["id"], "x", data={"d": 1}, token_count=4, sources=[{"u": 1}])
    owner = f"user:{alice.pk}"
    summary = store.get_session_summary(session["id"], owner=owner)
    message = store.get_message(session["id"], 1, owner=owner)

    assert session_json(summary) == SessionSerializer(summary).data
    assert message_json(message) == MessageSerializer(message).data


# --------------------------------------------------------------------------------------------- browsable API


def test_the_browsable_api_renders_the_new_endpoints_with_forms(api: APIClient) -> None:
    session = create_session(api)
    sent = append(api, session["id"], "streaming", status="in_progress")
    html = {"HTTP_ACCEPT": "text/html"}

    message_page = api.get(one(session["id"], sent["id"]), **html)
    extended = api.post(extend_url(session["id"], sent["id"]), {"text": " more"}, **html)
    context = api.get(context_url(session["id"]), {"max_tokens": 100}, **html)
    truncated = api.post(truncate_url(session["id"]), {"after": 5}, **html)

    for response in (message_page, extended, context, truncated):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        assert "<form" in response.content.decode()
    assert 'name="_content"' in message_page.content.decode()  # the raw PATCH form
    assert "streaming more" in extended.content.decode()
    assert 'name="text"' in extended.content.decode()
    assert 'name="after"' in truncated.content.decode()
    assert "streaming more" in context.content.decode()
    assert api.get(one(session["id"], sent["id"])).json()["content"] == "streaming more"


def test_the_fast_json_renderer_gives_drf_s_json() -> None:
    from django.utils.translation import gettext_lazy
    from rest_framework.exceptions import ErrorDetail
    from rest_framework.renderers import JSONRenderer

    from conversations.renderers import FastJSONRenderer

    fast, drf = FastJSONRenderer(), JSONRenderer()
    samples: list[Any] = [
        {"a": "ünï\u2028\u2029", "n": [1, -(2**63), 2**64 - 1, 1.5, None, True], "o": {}},
        [{"detail": ErrorDetail("Not found.", code="not_found")}],
        {"lazy": gettext_lazy("Session not found.")},
        {"big": 2**70},
    ]
    for data in samples:
        assert json.loads(fast.render(data)) == json.loads(drf.render(data))
        assert fast.render(data) == drf.render(data)  # the very bytes, for these values
    assert fast.render(None) == b""
    indented = fast.render({"a": 1}, "application/json; indent=2")
    assert indented == drf.render({"a": 1}, "application/json; indent=2")
    assert b"\n" in indented

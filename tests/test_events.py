"""The events stream in-process: its channel bookkeeping, and the WSGI path (a sync generator on the
process's one pub/sub connection) through Django's test client on the real Redis. The ASGI path runs
under uvicorn in tests/test_events_asgi.py; the chat page's browser test runs it under runserver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from conversations.events import ChannelBook, Listener, open_channels
from conversations.store import ConversationStore

pytestmark = pytest.mark.redis


class _Hub:
    def __init__(self) -> None:
        self.released: list[Listener] = []

    def release(self, listener: Listener) -> None:
        self.released.append(listener)


def test_a_channel_is_subscribed_for_its_first_listener_and_left_with_its_last() -> None:
    book, hub = ChannelBook(), _Hub()
    a, b = Listener(hub, "c", None), Listener(hub, "c", None)
    assert book.join(a) is True
    assert book.join(b) is False  # already subscribed: one subscription for both
    assert book.confirm("c") is True
    assert book.leave(a) is False
    assert book.leave(b) is True  # the last one leaves: unsubscribe


def test_an_old_subscribe_reply_does_not_confirm_a_newer_subscription() -> None:
    book, hub = ChannelBook(), _Hub()
    first = Listener(hub, "c", None)
    book.join(first)
    book.leave(first)  # unsubscribed before the first reply came back
    second = Listener(hub, "c", None)
    assert book.join(second) is True  # subscribed again
    assert book.confirm("c") is False  # the first SUBSCRIBE's reply: not yet trustworthy
    assert not book.is_confirmed("c")
    assert book.confirm("c") is True
    assert book.is_confirmed("c")


def frames(chunks: Iterator[bytes], count: int) -> list[dict[str, Any]]:
    """The next ``count`` events (comments skipped) from a streaming response's body."""
    events: list[dict[str, Any]] = []
    buffer = b""
    while len(events) < count:
        buffer += next(chunks)
        *done, buffer = buffer.split(b"\n\n")
        for frame in done:
            event: dict[str, Any] = {}
            for line in frame.decode().split("\n"):
                name, _, value = line.partition(": ")
                if name in ("id", "event", "data"):
                    event[name] = json.loads(value) if name == "data" else value
            if "event" in event:
                events.append(event)
    return events


@pytest.fixture
def signed_in(db: None, django_user_model: type[User]) -> tuple[Client, str]:
    user = django_user_model.objects.create_user("erin", password="pw")
    client = Client()
    client.force_login(user)
    return client, f"user:{user.pk}"


def test_the_wsgi_stream_sends_every_change_and_lets_go_of_its_channel(
    store: ConversationStore, signed_in: tuple[Client, str]
) -> None:
    client, owner = signed_in
    session = store.create_session(owner=owner, title="wsgi")
    response = client.get(f"/api/sessions/{session.id}/events/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    chunks = iter(response.streaming_content)
    assert frames(chunks, 1)[0] == {"event": "ready", "data": json.loads(json.dumps(frames_session(session)))}

    user = store.append_message(session.id, role="user", content="hi", owner=owner)
    reply = store.append_message(session.id, role="assistant", content="", owner=owner, status="in_progress")
    store.extend_message(session.id, reply.id, "Hel", owner=owner)
    store.extend_message(session.id, reply.id, "lo", owner=owner)
    store.update_message(session.id, reply.id, owner=owner, status="completed")
    store.delete_message(session.id, user.id, owner=owner)
    store.truncate_messages(session.id, after=0, owner=owner)
    got = frames(chunks, 7)
    assert [e["event"] for e in got] == [
        "message.created",
        "message.created",
        "message.extended",
        "message.extended",
        "message.updated",
        "message.removed",
        "messages.truncated",
    ]
    assert got[0]["data"]["content"] == "hi"
    assert [e["data"] for e in got[2:4]] == [
        {"message_id": reply.id, "delta": "Hel"},
        {"message_id": reply.id, "delta": "lo"},
    ]
    assert got[4]["data"]["content"] == "Hello"
    assert got[5]["data"] == {"message_id": user.id}
    assert got[6]["data"] == {"after": 0, "count": 1}
    assert open_channels() == 1
    response.close()  # what a WSGI server does when the client has gone
    deadline = time.monotonic() + 2
    while open_channels() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_channels() == 0


def frames_session(session: Any) -> dict[str, Any]:
    from conversations.serializers import SessionSerializer

    return dict(SessionSerializer(session).data)


def test_the_stream_is_only_for_clients_that_ask_for_it(
    store: ConversationStore, signed_in: tuple[Client, str]
) -> None:
    client, owner = signed_in
    session = store.create_session(owner=owner)
    response = client.get(f"/api/sessions/{session.id}/events/")  # no Accept: text/event-stream
    assert response.status_code == 406
    assert response["Content-Type"] == "application/json"
    other = store.create_session(owner="user:someone-else")
    for sid in (other.id, "AAAAAAAAAAAAAAAAAAAAAA", "x"):
        response = client.get(f"/api/sessions/{sid}/events/", HTTP_ACCEPT="text/event-stream")
        assert response.status_code == 404
        assert response.json() == {"detail": "Session not found."}
    response = client.get(
        f"/api/sessions/{session.id}/events/", HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="soon"
    )
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()
    assert open_channels() == 0


def test_with_event_history_0_writes_keep_no_stream_and_the_endpoint_says_events_are_off(
    settings: Any, key_prefix: str, signed_in: tuple[Client, str]
) -> None:
    from conversations.store import get_store

    settings.CONVERSATIONS = {**settings.CONVERSATIONS, "EVENT_HISTORY": 0}
    store = get_store()
    client, owner = signed_in
    session = store.create_session(owner=owner)
    first = store.append_message(session.id, role="user", content="hi", owner=owner)
    reply = store.append_message(session.id, role="assistant", content="", owner=owner, status="in_progress")
    store.extend_message(session.id, reply.id, "Hello", owner=owner)
    store.delete_message(session.id, first.id, owner=owner)
    assert [m.content for m in store.get_messages(session.id, owner=owner)] == ["Hello"]
    assert store.client.exists(store.keys.events(session.id)) == 0  # nothing kept for live readers
    response = client.get(f"/api/sessions/{session.id}/events/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("Live events are turned off on this site")
    assert open_channels() == 0

"""The events stream under a real ASGI server: uvicorn serving the example project's ASGI app on the real
Redis, in a subprocess. Streams are read over raw sockets (many at once, cheaply).

Prints its figures (``-s`` shows them): streams held open, and the time from a write to its event
reaching the client (median / p95).
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import selectors
import socket
import statistics
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from conversations.store import ConversationStore
from tests.example_site import example_env, prepare, serve, uvicorn_command

pytestmark = [pytest.mark.redis, pytest.mark.slow]

AUTH = "Basic " + base64.b64encode(b"demo:demo-password").decode()

try:
    import uvicorn  # noqa: F401

    HAVE_UVICORN = True
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_UVICORN = False


@dataclass
class Site:
    base: str
    port: int
    prefix: str
    proc: subprocess.Popen[bytes]
    redis: redis.Redis
    cookie: str = ""  # the demo user's session cookie: HTTP Basic would hash the password per request

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Cookie", self.cookie)
        request.add_header("X-CSRFToken", self.csrf)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    @property
    def csrf(self) -> str:
        return self.cookie.split("csrftoken=", 1)[1].split(";", 1)[0]

    def sign_in(self) -> None:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(self.base + "/api-auth/login/", timeout=10).read().decode()
        token = page.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
        form = urllib.parse.urlencode(
            {"username": "demo", "password": "demo-password", "csrfmiddlewaretoken": token, "next": "/"}
        ).encode()
        opener.open(urllib.request.Request(self.base + "/api-auth/login/", data=form), timeout=10).read()
        self.cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        assert "sessionid=" in self.cookie

    def channel(self, session_id: str) -> str:
        return f"{self.prefix}:s:{{{session_id}}}:ev"

    def subscribers(self, session_id: str) -> int:
        return int(
            dict(self.redis.pubsub_numsub(self.channel(session_id)))[self.channel(session_id).encode()]
        )


@pytest.fixture
def site(tmp_path: Path, redis_url: str, redis_client: redis.Redis, key_prefix: str) -> Iterator[Site]:
    if not HAVE_UVICORN:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("uvicorn is not installed (the test extra has it)")
        pytest.skip("uvicorn is not installed")
    prefix = key_prefix  # the test's own store (``store`` fixture) writes the site's keys
    env = example_env(
        tmp_path,
        REDIS_URL=redis_url,
        CONVERSATIONS_KEY_PREFIX=prefix,
        DEMO_THROTTLE_RATE="100000/min",
        DJANGO_DEBUG="0",
    )
    prepare(env)

    def start(port: int) -> list[str]:
        return uvicorn_command(port, "--timeout-keep-alive", "30")

    with serve(start, env, tmp_path / "uvicorn.log") as (base, proc):
        site = Site(base, int(base.rsplit(":", 1)[1]), prefix, proc, redis_client)
        site.sign_in()
        yield site


@dataclass
class Stream:
    """One open ``text/event-stream`` over a raw socket, parsed as it arrives."""

    sock: socket.socket
    status: int = 0
    buffer: bytes = b""
    events: list[dict[str, Any]] = field(default_factory=list)
    headers_done: bool = False

    @classmethod
    def open(cls, site: Site, session_id: str, last_event_id: str | None = None) -> Stream:
        sock = socket.create_connection(("127.0.0.1", site.port), timeout=10)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        sock.sendall(
            (
                f"GET /api/sessions/{session_id}/events/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Cookie: {site.cookie}\r\nAccept: text/event-stream\r\n{extra}\r\n"
            ).encode()
        )
        sock.setblocking(False)
        return cls(sock)

    def feed(self) -> bool:
        """Read what has arrived; False once the server closed the stream."""
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        now = time.perf_counter()
        self.buffer += chunk
        if not self.headers_done and b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.status = int(head.split(b" ", 2)[1])
            self.headers_done = True
        if self.headers_done:
            # Chunked transfer coding: drop the chunk-size lines (the events never contain "\r\n").
            text = b"\n".join(line for line in self.buffer.split(b"\r\n") if not _is_chunk_size(line))
            frames = text.split(b"\n\n")
            self.buffer = frames.pop()
            for frame in frames:
                event: dict[str, Any] = {"at": now}
                for line in frame.split(b"\n"):
                    name, _, value = line.decode().partition(": ")
                    if name in ("id", "event", "data"):
                        event[name] = json.loads(value) if name == "data" else value
                if "event" in event:
                    self.events.append(event)
        return True

    def named(self, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] in kinds]

    def close(self) -> None:
        self.sock.close()


def _is_chunk_size(line: bytes) -> bool:
    return bool(line) and all(c in b"0123456789abcdefABCDEF" for c in line.strip())


def pump(streams: list[Stream], until: Any, timeout: float = 20.0) -> None:
    selector = selectors.DefaultSelector()
    for stream in streams:
        selector.register(stream.sock, selectors.EVENT_READ, stream)
    deadline = time.monotonic() + timeout
    try:
        while not until():
            assert time.monotonic() < deadline, "timed out waiting for events"
            for key, _ in selector.select(timeout=0.2):
                key.data.feed()
    finally:
        selector.close()


def ready(stream: Stream) -> bool:
    return bool(stream.named("ready"))


OWNER = "user:1"  # the demo user, the first user of the site's fresh database


def write_reply(store: ConversationStore, session_id: str, deltas: int, *, start: int = 0) -> int:
    """A reply as an LLM integration writes it: in progress, extended ``deltas`` times, completed."""
    reply = store.append_message(session_id, role="assistant", content="", owner=OWNER, status="in_progress")
    extend(store, session_id, reply.id, range(start, start + deltas))
    store.update_message(session_id, reply.id, owner=OWNER, status="completed")
    return reply.id


def extend(store: ConversationStore, session_id: str, reply_id: int, numbers: Any) -> None:
    for i in numbers:
        store.extend_message(session_id, reply_id, f"t{i} ", owner=OWNER)


def test_a_reply_extended_50_times_arrives_as_50_ordered_deltas(site: Site, store: ConversationStore) -> None:
    session = site.api("POST", "/api/sessions/", {"title": "streamed"})
    stream = Stream.open(site, session["id"])
    pump([stream], lambda: ready(stream))
    assert stream.status == 200
    reply_id = write_reply(store, session["id"], 50)
    pump([stream], lambda: bool(stream.named("message.updated")))
    created = stream.named("message.created")
    assert [e["data"]["id"] for e in created] == [reply_id]
    deltas = stream.named("message.extended")
    assert [e["data"] for e in deltas] == [{"message_id": reply_id, "delta": f"t{i} "} for i in range(50)]
    ids = [e["id"] for e in stream.events if "id" in e]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert stream.named("message.updated")[0]["data"]["content"] == "".join(f"t{i} " for i in range(50))
    stream.close()


def test_reconnecting_with_last_event_id_loses_nothing(site: Site, store: ConversationStore) -> None:
    session = site.api("POST", "/api/sessions/", {"title": "resumed"})
    first = Stream.open(site, session["id"])
    pump([first], lambda: ready(first))
    reply = store.append_message(
        session["id"], role="assistant", content="", owner=OWNER, status="in_progress"
    )
    extend(store, session["id"], reply.id, range(10))
    pump([first], lambda: len(first.named("message.extended")) >= 4)
    seen = [e for e in first.events if "id" in e]
    first.close()  # the connection drops mid-reply
    extend(store, session["id"], reply.id, range(10, 15))  # written while disconnected

    second = Stream.open(site, session["id"], last_event_id=seen[-1]["id"])
    pump([second], lambda: ready(second))
    assert not second.named("reset")
    resumed = [e for e in second.events if "id" in e]
    texts = [e["data"]["delta"] for e in seen + resumed if e["event"] == "message.extended"]
    stored = site.api("GET", f"/api/sessions/{session['id']}/")["messages"][-1]["content"]
    assert "".join(texts) == stored  # every delta exactly once, in order
    assert len({e["id"] for e in seen + resumed}) == len(seen + resumed)

    # From the very start, nothing trimmed yet: the whole history, no reset.
    whole = Stream.open(site, session["id"], last_event_id="0-0")
    pump([whole], lambda: ready(whole))
    assert not whole.named("reset")
    assert len(whole.named("message.extended")) == 15
    whole.close()
    # An id older than the kept history (trimmed away since): a reset, telling the client to reload.
    store.client.xtrim(store.keys.events(session["id"]), maxlen=1, approximate=False)
    stale = Stream.open(site, session["id"], last_event_id=seen[0]["id"])
    pump([stale], lambda: ready(stale))
    assert stale.named("reset")
    for stream in (second, stale):
        stream.close()


def test_the_owner_rules_of_every_endpoint(site: Site) -> None:
    session = site.api("POST", "/api/sessions/", {"title": "mine"})
    for path, headers, status in (
        (f"/api/sessions/{session['id']}/events/", {}, 403),  # session auth first: 403 without a user
        ("/api/sessions/AAAAAAAAAAAAAAAAAAAAAA/events/", {"Authorization": AUTH}, 404),
        ("/api/sessions/not-an-id/events/", {"Authorization": AUTH}, 404),
        (f"/api/sessions/{session['id']}/events/", {"Authorization": AUTH, "Last-Event-ID": "x"}, 400),
    ):
        request = urllib.request.Request(site.base + path, headers={"Accept": "text/event-stream", **headers})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == status, path
        assert caught.value.headers["Content-Type"] == "application/json"


def test_200_open_streams_stay_responsive_and_all_receive_a_write(site: Site) -> None:
    sessions = [site.api("POST", "/api/sessions/", {"title": f"s{i}"})["id"] for i in range(20)]
    # Opened 50 at a time: each opening is a request, and concurrent requests are bounded by the Redis
    # connection pools (redis-py 8: 100 connections by default); an open stream holds none of them.
    streams: list[Stream] = []
    for batch in range(4):
        opened = [Stream.open(site, sessions[i % 20]) for i in range(batch * 50, batch * 50 + 50)]
        pump(opened, lambda o=opened: all(ready(s) for s in o), timeout=60)
        streams += opened
    assert all(s.status == 200 for s in streams)
    # One pub/sub connection carries them all: each channel has one subscriber, and one connection
    # holds the 20 channels.
    assert {site.subscribers(sid) for sid in sessions} == {1}
    assert any(c.get("sub") == "20" for c in site.redis.client_list(_type="pubsub"))
    threads = len(os.listdir(f"/proc/{site.proc.pid}/task")) if os.path.isdir("/proc") else -1

    # A normal request answers fast while they are open.
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        site.api("GET", "/api/sessions/?limit=5")
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.25, timings

    # Every stream receives a write to its session; measure the write-to-event time.
    latencies: list[float] = []
    for round_ in range(10):
        for sid in sessions:
            written = time.perf_counter()
            site.api("POST", f"/api/sessions/{sid}/messages/", {"role": "user", "content": f"r{round_}"})
            targets = [s for i, s in enumerate(streams) if sessions[i % 20] == sid]
            pump(targets, lambda t=targets, r=round_: all(len(s.named("message.created")) > r for s in t))
            latencies.extend(s.named("message.created")[round_]["at"] - written for s in targets)
    assert all(len(s.named("message.created")) == 10 for s in streams)
    latencies.sort()
    median, p95 = statistics.median(latencies), latencies[int(len(latencies) * 0.95)]
    print(
        f"\n[events] {len(streams)} streams open on one uvicorn process; write -> event at the client "
        f"over {len(latencies)} deliveries: median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms; "
        f"a list request meanwhile: median {statistics.median(timings) * 1000:.1f} ms; "
        f"server threads with the streams open: {threads}"
    )
    assert p95 < 1.0
    for stream in streams:
        stream.close()


def test_a_disconnected_clients_subscription_is_gone_within_a_second(site: Site) -> None:
    session = site.api("POST", "/api/sessions/", {"title": "left"})["id"]
    streams = [Stream.open(site, session) for _ in range(3)]
    pump(streams, lambda: all(ready(s) for s in streams))
    assert site.subscribers(session) == 1  # three streams, one subscription
    streams[0].close()
    streams[1].close()
    time.sleep(0.3)
    assert site.subscribers(session) == 1  # the last stream still holds it
    streams[2].close()
    closed = time.monotonic()
    while site.subscribers(session) and time.monotonic() - closed < 1.0:
        time.sleep(0.02)
    assert site.subscribers(session) == 0, "still subscribed a second after the last client left"


def test_a_deleted_session_ends_its_streams(site: Site) -> None:
    session = site.api("POST", "/api/sessions/", {"title": "gone"})["id"]
    stream = Stream.open(site, session)
    pump([stream], lambda: ready(stream))
    site.api("DELETE", f"/api/sessions/{session}/")
    pump([stream], lambda: bool(stream.named("session.deleted")))
    assert stream.named("session.deleted")[0]["data"] == {"id": session}
    stream.close()

"""Live events: ``GET /api/sessions/{id}/events/`` streams every change to a session as Server-Sent Events.

The write scripts add each change to the session's capped stream and publish it on the channel
``store.events_channel(id)``. This module turns those into SSE frames:

* **Open.** The session is checked (404 alike for missing and another owner's), then the channel is
  subscribed, *then* what the client missed since ``Last-Event-ID`` (header, or ``?last_event_id=`` for
  a first connection) is read from the stream: nothing published in between is lost, and a live event
  already sent from the stream is skipped by its id. A stream trimmed past that id gives a ``reset``
  event (reload the session). A ``ready`` event (the session) says the client is live.
* **Multiplexing.** One pub/sub connection per event loop (ASGI) or per process (WSGI) carries the
  channels of every open stream: a channel is subscribed when the first stream of its session opens
  and unsubscribed when the last one closes. ``ChannelBook`` keeps that bookkeeping, free of I/O; the
  two hubs only send the commands it asks for and fan messages out.
* **Servers.** Under ASGI the stream runs on the server's event loop (the async store and pub/sub);
  a client that goes away cancels it, which releases its subscription at once. Under WSGI it holds one
  worker thread per open stream, and a gone client is noticed at the next write (a heartbeat at the
  latest). If the pub/sub connection drops, every stream on it ends: browsers reconnect with
  ``Last-Event-ID`` and get what they missed from the stream.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from .clients import get_async_redis_client
from .conf import conf
from .exceptions import SessionNotFound, StoreUnavailable
from .schema import OpenApiParameter, OpenApiResponse, extend_schema
from .serializers import ErrorSerializer, message_json, session_json
from .store import ConversationStore, get_redis_client, get_store
from .store.codec import Event, decode_published
from .store.records import SessionSummary
from .store.validation import event_id as valid_event_id
from .throttling import ConversationsRateThrottle
from .views import (
    ERROR_RESPONSES,
    RETRY_AFTER_PARAMETER,
    SESSION_ID_PARAMETER,
    TAGS,
    HasConversationOwner,
    api_exception_for,
    resolve_owner,
)

logger = logging.getLogger("conversations")

#: Seconds a pub/sub read waits before looking again (it also bounds how long a hub takes to stop).
POLL_SECONDS = 1.0
#: Seconds to wait for Redis to confirm a subscription before answering 503.
SUBSCRIBE_TIMEOUT = 5.0

# ---------------------------------------------------------------------------------------------- frames


def sse_frame(event: str | None = None, data: Any = None, *, event_id: str | None = None) -> bytes:
    """One SSE frame. ``data`` is sent as one line of JSON (JSON never needs a raw newline)."""
    lines = []
    if event_id is not None:
        lines.append(b"id: " + event_id.encode("ascii"))
    if event is not None:
        lines.append(b"event: " + event.encode("ascii"))
    if data is not None:
        lines.append(b"data: " + orjson.dumps(data))
    return b"\n".join(lines) + b"\n\n"


HEARTBEAT_FRAME = b": keep-alive\n\n"


def session_data(summary: SessionSummary) -> dict[str, Any]:
    return session_json(summary)


def event_data(event: Event, session_id: str, summary: SessionSummary | None) -> dict[str, Any] | None:
    """The ``data:`` of an event, in the API's shapes; None when there is nothing to send."""
    kind = event.kind
    if kind in ("message.created", "message.updated"):
        message = event.message
        return None if message is None else message_json(message)
    if kind == "message.extended":
        return {"message_id": event.message_id, "delta": event.delta}
    if kind == "message.removed":
        return {"message_id": event.message_id}
    if kind == "messages.truncated":
        # Every message after ``after`` is gone (ids never shift, so the client drops ids > after).
        return {"after": event.message_id, "count": int(event.payload or 0)}
    if kind == "session.updated":
        return None if summary is None else session_data(summary)
    return {"id": session_id}  # session.deleted


def event_frame(event: Event, session_id: str, summary: SessionSummary | None = None) -> bytes | None:
    data = event_data(event, session_id, summary)
    if data is None:
        return None
    # A deletion is published, not kept in the stream: it has no id to resume from.
    return sse_frame(event.kind, data, event_id=None if event.kind == "session.deleted" else event.id)


def _order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms or 0), int(seq or 0)


# ---------------------------------------------------------------------------------------------- channels


class Listener:
    """One open stream's inbox on a hub. ``None`` in the inbox means the connection was lost."""

    def __init__(self, hub: Any, channel: str, inbox: Any) -> None:
        self.hub = hub
        self.channel = channel
        self.inbox = inbox
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.release(self)

    def close_later(self) -> None:
        """``close`` from a garbage collector's finalizer: hand the release to the hub's own thread."""
        if not self.closed:
            self.closed = True
            self.hub.release_later(self)


@dataclass
class _Channel:
    listeners: set[Listener] = field(default_factory=set)
    subscribed: bool = False  # a SUBSCRIBE was sent for it (and no UNSUBSCRIBE since)
    confirmed: bool = False


class ChannelBook:
    """Which channels the hub's connection should hold, and which of them Redis has confirmed.

    Commands go out in the order the book decides them, so a channel left and joined again in quick
    succession is unsubscribed, then subscribed. A channel counts as confirmed only once the replies to
    every SUBSCRIBE sent for it have come back (an older one would otherwise stand for a newer one).
    """

    def __init__(self) -> None:
        self.channels: dict[str, _Channel] = {}
        self.pending: dict[str, int] = {}  # SUBSCRIBE replies not yet received, by channel

    def join(self, listener: Listener) -> bool:
        """Add a listener; True when its channel must be subscribed now (the caller sends it)."""
        state = self.channels.setdefault(listener.channel, _Channel())
        state.listeners.add(listener)
        if state.subscribed:
            return False
        state.subscribed = True
        self.pending[listener.channel] = self.pending.get(listener.channel, 0) + 1
        return True

    def leave(self, listener: Listener) -> bool:
        """Remove a listener; True when its channel must be unsubscribed now (the caller sends it)."""
        state = self.channels.get(listener.channel)
        if state is None:
            return False
        state.listeners.discard(listener)
        if state.listeners:
            return False
        del self.channels[listener.channel]
        return state.subscribed

    def confirm(self, channel: str) -> bool:
        """A SUBSCRIBE reply came back; True when the channel's listeners may now trust it."""
        left = self.pending.get(channel, 0) - 1
        if left > 0:
            self.pending[channel] = left
            return False
        self.pending.pop(channel, None)
        state = self.channels.get(channel)
        if state is None or not state.subscribed:
            return False
        state.confirmed = True
        return True

    def is_confirmed(self, channel: str) -> bool:
        state = self.channels.get(channel)
        return state is not None and state.confirmed

    def listeners(self, channel: str) -> list[Listener]:
        state = self.channels.get(channel)
        return list(state.listeners) if state is not None else []

    def everyone(self) -> list[Listener]:
        return [listener for state in self.channels.values() for listener in state.listeners]


_CONFIRMATIONS = {"subscribe", "ssubscribe"}
_MESSAGES = {"message", "smessage"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class AsyncEventHub:
    """The pub/sub connection of one event loop, shared by every stream open on that loop."""

    def __init__(self, client: Any, *, sharded: bool) -> None:
        self.client = client
        self.sharded = sharded
        self.loop = asyncio.get_running_loop()
        self.book = ChannelBook()
        self.pubsub: Any = None
        self.lock = asyncio.Lock()
        self.confirmed = asyncio.Condition()
        self.reader: asyncio.Task[None] | None = None
        self.broken = False

    async def listen(self, channel: str) -> Listener:
        listener = Listener(self, channel, asyncio.Queue())
        try:
            async with self.lock:
                if self.book.join(listener):
                    await self._command("subscribe", channel)
            async with self.confirmed:
                await asyncio.wait_for(
                    self.confirmed.wait_for(lambda: self.broken or self.book.is_confirmed(channel)),
                    SUBSCRIBE_TIMEOUT,
                )
            if self.broken:
                raise StoreUnavailable("The pub/sub connection to Redis was lost.")
        except BaseException as exc:
            listener.close()
            if isinstance(exc, (TimeoutError, OSError)) or _is_redis_error(exc):
                raise StoreUnavailable(f"Could not subscribe to {channel}: {exc!r}") from exc
            raise
        return listener

    def release(self, listener: Listener) -> None:
        # Called from a stream's ``finally``, possibly while its task is being cancelled: the
        # unsubscribe goes out from a task of its own, in order behind any other command.
        if self.loop.is_closed():
            self.book.leave(listener)
            return
        self.loop.call_soon_threadsafe(self._schedule_leave, listener)

    release_later = release

    def _schedule_leave(self, listener: Listener) -> None:
        self.loop.create_task(self._leave(listener))

    async def _leave(self, listener: Listener) -> None:
        async with self.lock:
            if self.book.leave(listener) and not self.broken:
                try:
                    await self._command("unsubscribe", listener.channel)
                except Exception:  # the connection is gone: the reader ends every stream anyway
                    logger.debug("Unsubscribing %s failed.", listener.channel, exc_info=True)

    async def _command(self, verb: str, channel: str) -> None:
        if self.pubsub is None:
            self.pubsub = self.client.pubsub()
        if self.sharded:
            await getattr(self.pubsub, "s" + verb)(channel)
        else:
            await getattr(self.pubsub, verb)(channel)
        if self.reader is None:
            self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                if self.sharded:
                    message = await self.pubsub.get_sharded_message(timeout=POLL_SECONDS)
                else:
                    message = await self.pubsub.get_message(timeout=POLL_SECONDS)
                if message is None:
                    continue
                kind = _text(message.get("type"))
                channel = _text(message.get("channel"))
                if kind in _MESSAGES:
                    for listener in self.book.listeners(channel):
                        listener.inbox.put_nowait(message.get("data"))
                elif kind in _CONFIRMATIONS and self.book.confirm(channel):
                    async with self.confirmed:
                        self.confirmed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("The events pub/sub connection failed (%r); ending its streams.", exc)
            await self._break()
        finally:
            if self.pubsub is not None:
                try:
                    await self.pubsub.aclose()
                except Exception:
                    logger.debug("Closing the events pub/sub failed.", exc_info=True)

    async def _break(self) -> None:
        self.broken = True
        _forget_async_hub(self)
        for listener in self.book.everyone():
            listener.inbox.put_nowait(None)
        async with self.confirmed:
            self.confirmed.notify_all()


class SyncEventHub:
    """The pub/sub connection of a WSGI process, read by a thread of its own."""

    def __init__(self, client: Any, *, sharded: bool) -> None:
        self.client = client
        self.sharded = sharded
        self.book = ChannelBook()
        self.pubsub: Any = None
        self.lock = threading.Lock()
        self.confirmed = threading.Condition(self.lock)
        self.reader: threading.Thread | None = None
        self.broken = False
        # Listeners whose stream was collected unread; released by the reader thread (a finalizer may
        # run while this very thread holds the lock).
        self.orphans: queue.SimpleQueue[Listener] = queue.SimpleQueue()

    def listen(self, channel: str) -> Listener:
        listener = Listener(self, channel, queue.SimpleQueue())
        try:
            with self.lock:
                if self.book.join(listener):
                    self._command("subscribe", channel)
                ok = self.confirmed.wait_for(
                    lambda: self.broken or self.book.is_confirmed(channel), SUBSCRIBE_TIMEOUT
                )
                if self.broken or not ok:
                    raise StoreUnavailable(f"Redis did not confirm the subscription to {channel}.")
        except BaseException as exc:
            listener.close()
            if isinstance(exc, OSError) or _is_redis_error(exc):
                raise StoreUnavailable(f"Could not subscribe to {channel}: {exc!r}") from exc
            raise
        return listener

    def release(self, listener: Listener) -> None:
        with self.lock:
            if self.book.leave(listener) and not self.broken:
                try:
                    self._command("unsubscribe", listener.channel)
                except Exception:
                    logger.debug("Unsubscribing %s failed.", listener.channel, exc_info=True)

    def release_later(self, listener: Listener) -> None:
        self.orphans.put(listener)

    def _command(self, verb: str, channel: str) -> None:
        # Sent by the caller's thread while the reader thread waits on the same socket: redis-py's
        # PubSub is meant to be used that way (``run_in_thread``); the lock keeps commands in order.
        if self.pubsub is None:
            self.pubsub = self.client.pubsub()
        getattr(self.pubsub, ("s" if self.sharded else "") + verb)(channel)
        if self.reader is None:
            self.reader = threading.Thread(target=self._read, name="conversations-events", daemon=True)
            self.reader.start()

    def _read(self) -> None:
        try:
            while True:
                while not self.orphans.empty():
                    self.release(self.orphans.get())
                if self.sharded:
                    message = self.pubsub.get_sharded_message(timeout=POLL_SECONDS)
                else:
                    message = self.pubsub.get_message(timeout=POLL_SECONDS)
                if message is None:
                    continue
                kind = _text(message.get("type"))
                channel = _text(message.get("channel"))
                with self.lock:
                    if kind in _MESSAGES:
                        for listener in self.book.listeners(channel):
                            listener.inbox.put(message.get("data"))
                    elif kind in _CONFIRMATIONS and self.book.confirm(channel):
                        self.confirmed.notify_all()
        except Exception as exc:
            logger.warning("The events pub/sub connection failed (%r); ending its streams.", exc)
            with self.lock:
                self.broken = True
                _forget_sync_hub(self)
                for listener in self.book.everyone():
                    listener.inbox.put(None)
                self.confirmed.notify_all()
            try:
                self.pubsub.close()
            except Exception:
                logger.debug("Closing the events pub/sub failed.", exc_info=True)


def _is_redis_error(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, redis.RedisError)


_async_hubs: dict[asyncio.AbstractEventLoop, AsyncEventHub] = {}
_sync_hubs: dict[int, SyncEventHub] = {}
_hubs_lock = threading.Lock()


def async_hub(store: ConversationStore) -> AsyncEventHub:
    """The running loop's hub, on the loop's async client (a new one if that client changed)."""
    loop = asyncio.get_running_loop()
    client = get_async_redis_client()
    hub = _async_hubs.get(loop)
    if hub is None or hub.client is not client or hub.broken:
        hub = AsyncEventHub(client, sharded=store.is_cluster)
        with _hubs_lock:
            for closed in [other for other in _async_hubs if other.is_closed()]:
                del _async_hubs[closed]
            _async_hubs[loop] = hub
    return hub


def _forget_async_hub(hub: AsyncEventHub) -> None:
    _forget(_async_hubs, hub)


def sync_hub(store: ConversationStore) -> SyncEventHub:
    """The process's hub, on the store's sync client (a new one if that client changed)."""
    client = get_redis_client()
    with _hubs_lock:
        hub = _sync_hubs.get(id(client))
        if hub is None or hub.client is not client or hub.broken:
            hub = _sync_hubs[id(client)] = SyncEventHub(client, sharded=store.is_cluster)
    return hub


def _forget_sync_hub(hub: SyncEventHub) -> None:
    _forget(_sync_hubs, hub)


def _forget(hubs: dict[Any, Any], hub: object) -> None:
    """Drop ``hub`` from its registry (it broke or closed), whatever key it is under."""
    with _hubs_lock:
        for key, other in list(hubs.items()):
            if other is hub:
                del hubs[key]


def open_channels() -> int:
    """How many session channels this process's hubs hold (for tests and metrics)."""
    with _hubs_lock:
        hubs: list[Any] = [*_async_hubs.values(), *_sync_hubs.values()]
    return sum(len(hub.book.channels) for hub in hubs)


# ---------------------------------------------------------------------------------------------- streams


@dataclass
class Opening:
    """What a stream sends before its live events: missed events (or a reset), then ``ready``."""

    listener: Listener
    frames: list[bytes]
    last_id: str | None  # the newest event id sent; live events up to it are skipped


def _opening_frames(
    session_id: str,
    summary: SessionSummary,
    missed: list[Event] | None,
    complete: bool,
    summaries: dict[str, SessionSummary],
) -> tuple[list[bytes], str | None]:
    frames = [b"retry: 2000\n\n"]
    last_id = None
    if missed is not None and not complete:
        frames.append(sse_frame("reset", {"reason": "history_trimmed"}))
    elif missed:
        for event in missed:
            frame = event_frame(event, session_id, summaries.get(event.id, summary))
            if frame is not None:
                frames.append(frame)
            last_id = event.id
    frames.append(sse_frame("ready", session_data(summary)))
    return frames, last_id


class _Stream:
    """Live-event bookkeeping shared by the sync and the async loop."""

    def __init__(self, session_id: str, last_id: str | None, heartbeat: float, lifetime: float) -> None:
        self.session_id = session_id
        self.last = _order(last_id) if last_id else None
        self.heartbeat = heartbeat
        self.deadline = time.monotonic() + lifetime

    def decode(self, raw: Any) -> Event | None:
        event = decode_published(raw)
        if event is None or event.kind == "session.deleted":
            return event
        order = _order(event.id)
        if self.last is not None and order <= self.last:
            return None  # already sent from the stream's history
        self.last = order
        return event

    def wait(self) -> float:
        return max(0.0, min(self.heartbeat, self.deadline - time.monotonic()))

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


async def aopen_stream(store: ConversationStore, session_id: str, owner: str, last: str | None) -> Opening:
    summary = await store.aget_session_summary(session_id, owner=owner)  # 404 before any subscription
    listener = await async_hub(store).listen(store.events_channel(session_id))
    try:
        missed, complete = (None, True)
        if last is not None:
            missed, complete = await store.aevents_since(session_id, last, owner=owner)
            while complete and len(missed) >= MAX_EVENTS_PER_READ and missed:
                more, complete = await store.aevents_since(session_id, missed[-1].id, owner=owner)
                if not more:
                    break
                missed.extend(more)
        frames, last_id = _opening_frames(session_id, summary, missed, complete, {})
    except BaseException:
        listener.close()
        raise
    return Opening(listener, frames, last_id or last)


def open_stream(store: ConversationStore, session_id: str, owner: str, last: str | None) -> Opening:
    summary = store.get_session_summary(session_id, owner=owner)
    listener = sync_hub(store).listen(store.events_channel(session_id))
    try:
        missed, complete = (None, True)
        if last is not None:
            missed, complete = store.events_since(session_id, last, owner=owner)
            while complete and len(missed) >= MAX_EVENTS_PER_READ and missed:
                more, complete = store.events_since(session_id, missed[-1].id, owner=owner)
                if not more:
                    break
                missed.extend(more)
        frames, last_id = _opening_frames(session_id, summary, missed, complete, {})
    except BaseException:
        listener.close()
        raise
    return Opening(listener, frames, last_id or last)


#: The most events one ``events_since`` call returns (the store's cap); more are read in further calls.
MAX_EVENTS_PER_READ = 1000


async def astream(
    store: ConversationStore, opening: Opening, session_id: str, owner: str, heartbeat: float, lifetime: float
) -> AsyncIterator[bytes]:
    listener = opening.listener
    state = _Stream(session_id, opening.last_id, heartbeat, lifetime)
    try:
        for opening_frame in opening.frames:
            yield opening_frame
        while not state.expired:
            try:
                raw = await asyncio.wait_for(listener.inbox.get(), state.wait())
            except TimeoutError:
                yield HEARTBEAT_FRAME
                continue
            if raw is None:
                return  # the pub/sub connection was lost: the client reconnects and catches up
            event = state.decode(raw)
            if event is None:
                continue
            summary = None
            if event.kind == "session.updated":
                try:
                    summary = await store.aget_session_summary(session_id, owner=owner)
                except SessionNotFound:
                    continue  # deleted since: its session.deleted follows
            frame = event_frame(event, session_id, summary)
            if frame is not None:
                yield frame
            if event.kind == "session.deleted":
                return
    finally:
        listener.close()


def stream(
    store: ConversationStore, opening: Opening, session_id: str, owner: str, heartbeat: float, lifetime: float
) -> Iterator[bytes]:
    listener = opening.listener
    state = _Stream(session_id, opening.last_id, heartbeat, lifetime)
    try:
        yield from opening.frames
        while not state.expired:
            try:
                raw = listener.inbox.get(timeout=state.wait())
            except queue.Empty:
                yield HEARTBEAT_FRAME
                continue
            if raw is None:
                return
            event = state.decode(raw)
            if event is None:
                continue
            summary = None
            if event.kind == "session.updated":
                try:
                    summary = store.get_session_summary(session_id, owner=owner)
                except SessionNotFound:
                    continue
            frame = event_frame(event, session_id, summary)
            if frame is not None:
                yield frame
            if event.kind == "session.deleted":
                return
    finally:
        listener.close()


# ---------------------------------------------------------------------------------------------- view


class EventStreamRenderer(BaseRenderer):
    """Lets ``Accept: text/event-stream`` through content negotiation; the view streams by itself."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return b""


class EventStreamNotAccepted(exceptions.NotAcceptable):
    default_detail = _(
        "This endpoint answers only requests that accept text/event-stream (EventSource sends "
        "Accept: text/event-stream; with curl, add -H 'Accept: text/event-stream')."
    )


class EventsTurnedOff(exceptions.APIException):
    status_code = 404
    default_detail = _("Live events are turned off on this site (CONVERSATIONS['EVENT_HISTORY'] is 0).")
    default_code = "events_turned_off"


LAST_EVENT_ID_PARAMETER = OpenApiParameter(
    "Last-Event-ID",
    {"type": "string", "pattern": r"^[0-9]{1,20}-[0-9]{1,20}$"},
    OpenApiParameter.HEADER,
    required=False,
    description=_(
        "The `id` of the last event received: the stream starts with the events after it (browsers send it "
        "when they reconnect). A `reset` event instead means they are no longer kept: reload the session."
    ),
)

LAST_EVENT_ID_QUERY = OpenApiParameter(
    "last_event_id",
    {"type": "string", "pattern": r"^[0-9]{1,20}-[0-9]{1,20}$"},
    OpenApiParameter.QUERY,
    required=False,
    description=_("The same as the `Last-Event-ID` header, for a first connection (the header wins)."),
)

EVENTS_DESCRIPTION = """Server-Sent Events: one event per change to the session, each with an ordering `id`.

Event names and `data` (JSON): `message.created` and `message.updated` (the message, as the messages
endpoint renders it), `message.extended` (`{"message_id", "delta"}`: text appended to an in-progress
message), `message.removed` (`{"message_id"}`), `messages.truncated` (`{"after", "count"}`: every message
after `after` is gone), `session.updated` (the session), `session.deleted` (`{"id"}`; the stream ends).
Before the live events: what was missed since `Last-Event-ID` (or a `reset` event when it is no longer
kept), then `ready` (the session). A comment line is sent every 15 seconds while idle."""


@extend_schema(
    tags=TAGS,
    summary="Follow a session's changes live (Server-Sent Events)",
    description=EVENTS_DESCRIPTION,
    parameters=[SESSION_ID_PARAMETER, LAST_EVENT_ID_PARAMETER, LAST_EVENT_ID_QUERY, RETRY_AFTER_PARAMETER],
    responses={
        (200, "text/event-stream"): OpenApiResponse(
            {"type": "string"}, description="An endless `text/event-stream`; see the description."
        ),
        **{(code, "application/json"): ERROR_RESPONSES[code] for code in (400, 401, 403, 404, 429, 503)},
        (406, "application/json"): OpenApiResponse(
            ErrorSerializer, description="The request's `Accept` does not name `text/event-stream`."
        ),
    },
)
class SessionEventsView(APIView):
    """The changes to one of your sessions, live, as Server-Sent Events (`text/event-stream`).

    Send `Last-Event-ID` (browsers do when they reconnect) to first get what you missed.
    """

    permission_classes = [HasConversationOwner]
    # Errors are rendered as JSON (finalize_response); the stream is the only success.
    renderer_classes = [EventStreamRenderer]
    #: Seconds between keep-alive comments on an idle stream (proxies close silent connections).
    heartbeat_seconds: float = 15.0
    #: Seconds after which a stream ends (the client reconnects with ``Last-Event-ID``): this bounds
    #: how long a stream outlives its session's expiry and lets connections move between servers.
    lifetime_seconds: float = 600.0

    def get_throttles(self) -> list[BaseThrottle]:
        return [*super().get_throttles(), ConversationsRateThrottle()]

    def handle_exception(self, exc: Exception) -> Response:
        return super().handle_exception(api_exception_for(exc))

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(response, Response):  # an error: always JSON
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    def get(self, request: Request, id: str) -> StreamingHttpResponse:
        # An endless body must be asked for by name: a browser opening the URL, or a client that takes
        # anything (*/*), would otherwise hang on it.
        if EventStreamRenderer.media_type not in request.headers.get("Accept", ""):
            raise EventStreamNotAccepted()
        if conf.EVENT_HISTORY <= 0:
            raise EventsTurnedOff()
        owner = resolve_owner(request)
        assert owner is not None, "HasConversationOwner lets no request without an owner through"
        header = request.headers.get("Last-Event-ID", "").strip()
        last = header or request.query_params.get("last_event_id") or None
        if last is not None:
            valid_event_id(last, field="Last-Event-ID" if header else "last_event_id")
        store = get_store()
        content: Iterator[bytes] | AsyncIterator[bytes]
        if isinstance(request._request, ASGIRequest):
            # DRF runs this view in a worker thread; the stream itself lives on the server's loop.
            opening = async_to_sync(aopen_stream)(store, id, owner, last)
            content = astream(store, opening, id, owner, self.heartbeat_seconds, self.lifetime_seconds)
        else:
            opening = open_stream(store, id, owner, last)
            content = stream(store, opening, id, owner, self.heartbeat_seconds, self.lifetime_seconds)
        # Should the response never be iterated (a client gone before the first byte), the
        # subscription still goes when the iterator is collected.
        weakref.finalize(content, opening.listener.close_later)
        response = StreamingHttpResponse(content, content_type="text/event-stream; charset=utf-8")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        return response

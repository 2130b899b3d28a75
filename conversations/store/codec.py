"""The one wire format: how messages, summaries, cursors and events look in Redis, and back.

Everything that writes or reads a stored message, a session summary reply or a cursor goes through
this module (the scripts, the operations, the operator tools and the HTTP pagination), so the format
has one home. No I/O here.

A stored message (layout 2) is one JSON object whose fields come in a fixed order, with a newline
between the groups a script may need to change on its own::

    {"id":7,"created_at":1764612896000,"role":"assistant","sources":[]
    ,"status":"in_progress"
    ,"token_count":null
    ,"data":{}
    ,"content":"Hel"}

A newline between tokens is JSON whitespace, so the whole member still parses as one object (and a
window of them as one array), while a script can swap a segment or append to the content without
decoding anything: orjson never writes a raw newline inside a value. The content comes last so that
``extend_message`` is a string append in Lua. Layout 1's messages, ``{"id","created_at","role",
"content","sources"}`` on one line, are rewritten to this shape by the ``MIGRATE`` script.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from conversations.exceptions import InvalidInput

from .keys import SESSION_ID_RE
from .records import Message, Session, SessionSummary
from .validation import STATUSES

logger = logging.getLogger("conversations")


# Bound once: decoding a window of messages calls it per message.
_fromtimestamp = datetime.fromtimestamp
_loads = orjson.loads
_dumps = orjson.dumps

# Far above any session's length, far below anything Redis could not take as a score.
MAX_POSITION = 2**40


def as_text(value: bytes | str | None) -> str:
    """A Redis reply as text (None as ""); undecodable bytes become U+FFFD rather than an error."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def from_millis(value: int | float | bytes | str) -> datetime:
    """Integer milliseconds since the epoch (Redis's clock, as every script stores it) as UTC."""
    return _fromtimestamp(int(value) / 1000, UTC)


# ---------------------------------------------------------------------------------------- messages


def status_segment(status: str) -> bytes:
    return b',"status":' + _dumps(status)


def token_count_segment(token_count: int | None) -> bytes:
    return b',"token_count":null' if token_count is None else b',"token_count":%d' % token_count


def data_segment(data_b: bytes) -> bytes:
    return b',"data":' + data_b


def content_segment(content: str) -> bytes:
    return b',"content":' + _dumps(content) + b"}"


def content_delta(text: str) -> bytes:
    """``text`` as it goes inside the stored content's JSON string (escaped, without quotes)."""
    return _dumps(text)[1:-1]


def message_body(
    role: str,
    content: str,
    *,
    sources_b: bytes = b"[]",
    status: str = "completed",
    token_count: int | None = None,
    data_b: bytes = b"{}",
) -> bytes:
    """A message as stored, less its leading ``{"id":N,"created_at":T`` (the script adds those)."""
    return b"".join(
        (
            b',"role":',
            _dumps(role),
            b',"sources":',
            sources_b,
            b"\n",
            status_segment(status),
            b"\n",
            token_count_segment(token_count),
            b"\n",
            data_segment(data_b),
            b"\n",
            content_segment(content),
        )
    )


def stored_message(message_id: int, created_at_ms: int, body: bytes) -> bytes:
    """The whole stored member, as the append script writes it (used by the import)."""
    return b'{"id":%d,"created_at":%d' % (message_id, created_at_ms) + body


def decode_message(raw: bytes | str | None, where: str = "") -> Message | None:
    """One stored message, or None (logged) when it is not of the stored shape."""
    if raw is None:
        return None
    try:
        item = _loads(raw)
        message = _message_from(item)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError, AttributeError):
        message = None
    if message is None:
        logger.warning("Skipping a corrupt message in session %s", where or "?")
    return message


def _message_from(item: Any) -> Message | None:
    id_, created_at = item["id"], item["created_at"]
    role, content = item["role"], item["content"]
    sources = item.get("sources", [])
    status = item.get("status", "completed")
    data = item.get("data", {})
    token_count = item.get("token_count")
    if not (
        type(id_) is int
        and type(created_at) is int
        and type(role) is str
        and type(content) is str
        and type(sources) is list
        and type(status) is str
        and type(data) is dict
        and (token_count is None or type(token_count) is int)
    ):
        return None
    return Message(
        id_, role, content, sources, _fromtimestamp(created_at / 1000, UTC), status, data, token_count
    )


def decode_messages(raws: Sequence[bytes], where: str = "") -> list[Message]:
    """A window of stored messages, decoded in one orjson pass over the joined list (a pass per
    message costs more than the round trip that fetched them). Anything unexpected sends the window
    down ``decode_message``'s careful path, which skips and logs just the corrupt ones."""
    if not raws:
        return []
    try:
        items = _loads(b"[" + b",".join(raws) + b"]")
        if len(items) == len(raws):
            messages = []
            for item in items:
                message = _message_from(item)
                if message is None:
                    break
                messages.append(message)
            else:
                return messages
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError, AttributeError):
        pass
    return [m for raw in raws if (m := decode_message(raw, where)) is not None]


def message_problem(raw: bytes | str | None, expected_id: int | None = None) -> str | None:
    """Why a stored message is not of the stored shape, or None if it is (the report's check)."""
    label = f"message {expected_id}" if expected_id is not None else "a message"
    if raw is None:
        return f"{label} is missing"
    try:
        item = _loads(raw)
    except orjson.JSONDecodeError:
        return f"{label} is not JSON"
    if not isinstance(item, dict):
        return f"{label} is not a JSON object"
    try:
        message = _message_from(item)
    except (KeyError, TypeError, ValueError, OverflowError):
        message = None
    if message is None:
        return f"{label} lacks a field or has one of the wrong type"
    if message.status not in STATUSES:
        return f"{label} has an unknown status"
    if expected_id is not None and message.id != expected_id:
        return f"message at score {expected_id} has id {message.id}"
    return None


# ---------------------------------------------------------------------------------------- sessions


def decode_metadata(raw: bytes | str | None, where: str = "") -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = _loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        logger.warning("Ignoring corrupt metadata in session %s", where or "?")
        return {}
    return value


#: The fields of a meta hash that make a summary, in the order every script returns them.
SUMMARY_FIELDS = ("title", "metadata", "created_at", "updated_at", "count", "expires_at")


def summary_from_reply(
    session_id: str,
    owner: str,
    fields: Sequence[Any],
    pttl: int,
    now_ms: float,
    *,
    messages: list[Message] | None = None,
) -> SessionSummary:
    """A summary from ``SUMMARY_FIELDS`` as a script returned them (and the meta key's PTTL), or a
    ``Session`` carrying ``messages`` when they are given.

    ``expires_at`` is the absolute expiry the last write set (stable between reads); a session of
    layout 1, which did not store it, reckons it from the remaining TTL and ``now_ms``.
    """
    title, metadata, created_at, updated_at, count, expires = fields[:6]
    if pttl < 0:
        expires_at = None
    elif expires:
        expires_at = from_millis(expires)
    else:
        expires_at = from_millis(now_ms + pttl)
    values: dict[str, Any] = {
        "id": session_id,
        "owner": owner or None,
        "title": as_text(title),
        "metadata": decode_metadata(metadata, session_id),
        "created_at": from_millis(created_at or 0),
        "updated_at": from_millis(updated_at or 0),
        "expires_at": expires_at,
        "message_count": int(count or 0),
    }
    return SessionSummary(**values) if messages is None else Session(**values, messages=messages)


def listed_summaries(flat: list[Any], owner: str, now_ms: float) -> list[SessionSummary]:
    """``LIST_PAGE``'s flat summaries (7 values a session: id, expires, title, metadata, created_at,
    updated_at, count) as summaries, in one pass: a whole listing builds thousands.

    Each summary is made empty and its slots filled directly (what a frozen dataclass's own
    ``__init__`` does through ``object.__setattr__``, at several times the cost)."""
    owner_v = owner or None
    new, cls = object.__new__, SessionSummary
    stamp, utc, empty = _fromtimestamp, UTC, _EMPTY_METADATA
    put_id, put_owner, put_title, put_metadata, put_created, put_updated, put_expires, put_count = _SETTERS
    summaries = []
    for at in range(0, len(flat) - 6, 7):
        session_id, expires, title, metadata, created, updated, count = flat[at : at + 7]
        session_id = session_id.decode() if type(session_id) is bytes else session_id
        summary = new(cls)
        if type(expires) is not int:  # the stored expires_at
            put_expires(summary, stamp(int(expires) / 1000, utc))
        elif expires < 0:  # layout 1 without a TTL
            put_expires(summary, None)
        else:  # layout 1: the remaining TTL, from when it was listed
            put_expires(summary, stamp((now_ms + expires) / 1000, utc))
        put_id(summary, session_id)
        put_owner(summary, owner_v)
        put_title(summary, title.decode("utf-8", "replace") if type(title) is bytes else title)
        put_metadata(summary, {} if metadata in empty else decode_metadata(metadata, session_id))
        put_created(summary, stamp(int(created) / 1000, utc))
        put_updated(summary, stamp(int(updated) / 1000, utc))
        put_count(summary, int(count))
        summaries.append(summary)
    return summaries


_EMPTY_METADATA = (b"{}", "{}", b"", "", None)
#: Each field's slot setter, in the fields' order (id, owner, title, metadata, created_at, updated_at,
#: expires_at, message_count).
_SETTERS = tuple(getattr(SessionSummary, f.name).__set__ for f in fields(SessionSummary))


def score_pairs(reply: Sequence[Any]) -> list[tuple[Any, Any]]:
    """(member, score) pairs of a ``WITHSCORES`` reply, flat (RESP2) or paired (RESP3, or a client
    that applied its own reply callback)."""
    if reply and isinstance(reply[0], list | tuple):
        return [(pair[0], pair[1]) for pair in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))


# ---------------------------------------------------------------------------------------- cursors


def encode_session_cursor(score: int, session_id: str) -> str:
    """A position in an owner's session listing: after the session ``session_id`` at ``score``."""
    return base64.urlsafe_b64encode(f"{score}.{session_id}".encode()).decode().rstrip("=")


def decode_session_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        score_text, session_id = raw.split(".", 1)
        if not (score_text.isascii() and score_text.isdigit()):
            raise ValueError(score_text)
        score = int(score_text)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidInput("This cursor is not valid.", field="cursor") from exc
    if not SESSION_ID_RE.match(session_id):
        raise InvalidInput("This cursor is not valid.", field="cursor")
    return score, session_id


@dataclass(frozen=True, slots=True)
class MessageCursor:
    """A position in a session's messages: the page holds the ids after (or before) ``position``."""

    direction: Literal["after", "before"]
    position: int

    def encode(self) -> str:
        raw = f"{self.direction[0]}{self.position}".encode("ascii")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> MessageCursor:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raw = ""
        kind, digits = raw[:1], raw[1:]
        if kind in ("a", "b") and digits.isdigit() and digits.isascii() and len(digits) < 16:
            position = int(digits)
            if position <= MAX_POSITION:
                return cls("after" if kind == "a" else "before", position)
        raise InvalidInput("This cursor is not valid.", field="cursor")


# ---------------------------------------------------------------------------------------- events

#: Kinds of change a session's event stream carries (the ``t`` field the scripts write).
EVENT_KINDS = {
    "c": "message.created",
    "u": "message.updated",
    "x": "message.extended",
    "r": "message.removed",
    "t": "messages.truncated",
    "s": "session.updated",
    "d": "session.deleted",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One change to a session, as its stream or channel carried it.

    ``id`` is the stream entry id (``"<ms>-<n>"``), which orders the session's events; ``message_id``
    names the message concerned (for a truncation: the ``after`` position); ``payload`` is the stored
    message (created, updated), the appended text (extended), the number removed (truncated), or b"".
    """

    id: str
    kind: str
    message_id: int
    payload: bytes

    @property
    def message(self) -> Message | None:
        return decode_message(self.payload) if self.kind in ("message.created", "message.updated") else None

    @property
    def delta(self) -> str:
        """The text an ``message.extended`` event appended."""
        return str(_loads(b'"' + self.payload + b'"')) if self.payload else ""


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def decode_published(raw: bytes | str) -> Event | None:
    """An event as the scripts PUBLISH it: ``<stream id> <kind> <message id> <payload>``."""
    data = _as_bytes(raw)
    parts = data.split(b" ", 3)
    if len(parts) != 4 or parts[1].decode("ascii", "replace") not in EVENT_KINDS:
        return None
    try:
        message_id = int(parts[2])
    except ValueError:
        return None
    return Event(parts[0].decode("ascii", "replace"), EVENT_KINDS[parts[1].decode()], message_id, parts[3])


def decode_stream_entry(entry_id: bytes | str, fields: Any) -> Event | None:
    """An event as the session's stream holds it (XRANGE's ``[id, {t, m, d}]``)."""
    if isinstance(fields, dict):
        mapping = {as_text(k): v for k, v in fields.items()}
    else:  # a flat [field, value, ...] list (a script's reply)
        mapping = {as_text(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
    kind = EVENT_KINDS.get(as_text(mapping.get("t")))
    if kind is None:
        return None
    try:
        message_id = int(mapping.get("m") or 0)
    except ValueError:
        return None
    return Event(as_text(entry_id), kind, message_id, _as_bytes(mapping.get("d") or b""))

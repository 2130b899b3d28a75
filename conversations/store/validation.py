"""Checks on every input, done before anything is sent to Redis.

Each validator returns the value in the form the store writes (for JSON values: the encoded bytes, so
nothing is encoded twice) or raises ``InvalidInput`` with a message a user can act on.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from conversations.exceptions import InvalidInput

from .keys import SESSION_ID_RE, UNOWNED

MAX_OWNER_LENGTH = 256
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def owner_value(owner: str | None) -> str:
    """The owner as stored: ``""`` is the unowned namespace, which ``None`` names."""
    if owner is None:
        return UNOWNED
    if not isinstance(owner, str) or not owner:
        raise InvalidInput("The owner must be a non-empty string or None.", field="owner")
    if len(owner) > MAX_OWNER_LENGTH:
        raise InvalidInput(f"The owner must be at most {MAX_OWNER_LENGTH} characters.", field="owner")
    return owner


def is_session_id(value: object) -> bool:
    """Whether ``value`` has the shape of a session id. Anything else cannot name a session."""
    return isinstance(value, str) and SESSION_ID_RE.match(value) is not None


def check_json(value: Any, *, field: str, max_depth: int, max_bytes: int | None = None) -> None:
    """Refuse values JSON cannot carry faithfully, and nesting deeper than ``max_depth``.

    With ``max_bytes``, also refuse more values than that: each encodes to at least one byte, so they
    could not fit anyway. This stops the walk early on Python objects that repeat one list many times
    (``[[[0] * 1000] * 1000] * 1000`` is a billion values in a few KB of memory), which would otherwise
    take minutes here and gigabytes in the encoder.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    budget = max_bytes
    while stack:
        item, depth = stack.pop()
        if budget is not None:
            budget -= 1
            if budget < 0:
                raise InvalidInput(f"Larger than the limit of {max_bytes} bytes encoded.", field=field)
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise InvalidInput(f"Nested deeper than {max_depth} levels.", field=field)
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidInput("Object keys must be strings.", field=field)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        elif isinstance(item, int):
            if not -(2**63) <= item < 2**64:
                raise InvalidInput("Integers must fit in 64 bits.", field=field)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput("Numbers must be finite (no NaN or Infinity).", field=field)
        else:
            raise InvalidInput(f"Values of type {type(item).__name__} are not JSON.", field=field)


def encode_json(value: Any, *, field: str) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"Not a JSON value: {exc}", field=field) from exc


def metadata_bytes(metadata: Any, *, max_bytes: int, max_depth: int) -> bytes:
    if metadata is None:
        return b"{}"
    if not isinstance(metadata, dict):
        raise InvalidInput("Metadata must be a JSON object.", field="metadata")
    check_json(metadata, field="metadata", max_depth=max_depth, max_bytes=max_bytes)
    encoded = encode_json(metadata, field="metadata")
    if len(encoded) > max_bytes:
        raise InvalidInput(
            f"Metadata is {len(encoded)} bytes encoded; the limit is {max_bytes}.", field="metadata"
        )
    return encoded


def _encodable(text: str, field: str) -> str:
    """``text``, refused when it cannot be UTF-8 (a lone surrogate): JSON and Redis could not carry it."""
    if not text.isascii():  # (ASCII always encodes; only other text pays for the check)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                "The text holds a lone surrogate, which is not valid Unicode.", field=field
            ) from exc
    return text


def title_value(title: Any, *, max_length: int) -> str:
    if title is None:
        return ""
    if not isinstance(title, str):
        raise InvalidInput("The title must be a string.", field="title")
    if len(title) > max_length:
        raise InvalidInput(f"The title must be at most {max_length} characters.", field="title")
    return _encodable(title, "title")


def role_value(role: Any, *, roles: tuple[str, ...], field: str = "role") -> str:
    if not isinstance(role, str) or role not in roles:
        raise InvalidInput(f"The role must be one of: {', '.join(roles)}.", field=field)
    return role


def content_value(content: Any, *, max_length: int, field: str = "content") -> str:
    if not isinstance(content, str):
        raise InvalidInput(f"The {field.rsplit('.', 1)[-1]} must be a string.", field=field)
    if len(content) > max_length:
        raise InvalidInput(
            f"The {field.rsplit('.', 1)[-1]} is {len(content)} characters; the limit is {max_length}.",
            field=field,
        )
    return _encodable(content, field)


def sources_bytes(
    sources: Any, *, max_sources: int, max_bytes: int, max_depth: int, field: str = "sources"
) -> bytes:
    if sources is None:
        return b"[]"
    if not isinstance(sources, list | tuple):
        raise InvalidInput("Sources must be a list of JSON objects.", field=field)
    if len(sources) > max_sources:
        raise InvalidInput(f"At most {max_sources} sources per message.", field=field)
    if not all(isinstance(source, dict) for source in sources):
        raise InvalidInput("Each source must be a JSON object.", field=field)
    check_json(list(sources), field=field, max_depth=max_depth, max_bytes=max_bytes)
    encoded = encode_json(list(sources), field=field)
    if len(encoded) > max_bytes:
        raise InvalidInput(
            f"Sources are {len(encoded)} bytes encoded; the limit is {max_bytes}.", field=field
        )
    return encoded


#: A message's ``status``: finished, still being written, or stopped early.
STATUSES = ("completed", "in_progress", "incomplete")


def status_value(status: Any, *, field: str = "status") -> str:
    if not isinstance(status, str) or status not in STATUSES:
        raise InvalidInput(f"The status must be one of: {', '.join(STATUSES)}.", field=field)
    return status


def data_bytes(data: Any, *, max_bytes: int, max_depth: int, field: str = "data") -> bytes:
    """A message's free-form ``data`` object, encoded (None is the empty object)."""
    if data is None:
        return b"{}"
    if not isinstance(data, dict):
        raise InvalidInput("Data must be a JSON object.", field=field)
    check_json(data, field=field, max_depth=max_depth, max_bytes=max_bytes)
    encoded = encode_json(data, field=field)
    if len(encoded) > max_bytes:
        raise InvalidInput(f"Data is {len(encoded)} bytes encoded; the limit is {max_bytes}.", field=field)
    return encoded


MAX_TOKEN_COUNT = 2**53


def token_count_value(value: Any, *, field: str = "token_count") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_COUNT:
        raise InvalidInput(
            f"token_count must be an integer from 0 to {MAX_TOKEN_COUNT}, or null.", field=field
        )
    return int(value)


#: The highest message id the store accepts as input (far above any session's).
MAX_MESSAGE_ID = 2**40


def message_id(value: Any, *, field: str = "message_id") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MESSAGE_ID:
        raise InvalidInput(f"{field} must be a message id (an integer from 1).", field=field)
    return int(value)


_EVENT_ID_RE = re.compile(r"\A[0-9]{1,20}-[0-9]{1,20}\Z")


def event_id(value: Any, *, field: str = "last_event_id") -> str:
    if not isinstance(value, str) or not _EVENT_ID_RE.match(value):
        raise InvalidInput("An event id looks like 1764612896000-0.", field=field)
    return value


def idempotency_key_value(key: Any) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidInput(
            f"An idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            field="idempotency_key",
        )
    if not key.isprintable() or not key.isascii():
        raise InvalidInput("An idempotency key must be printable ASCII.", field="idempotency_key")
    return key


def positive_int(value: Any, *, field: str, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{field} must be a positive integer.", field=field)
    if maximum is not None and value > maximum:
        raise InvalidInput(f"{field} must be at most {maximum}.", field=field)
    return int(value)


def position(value: Any, *, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MESSAGE_ID:
        raise InvalidInput(f"{field} must be a message id (an integer ≥ 0).", field=field)
    return int(value)

"""Cursor pagination for the HTTP API, in DRF's ``{next, previous, results}`` shape.

Sessions page with the store's own cursor (most recently active first; forward only). Messages page
by position: a message cursor is an opaque encoding of "after id A" or "before id B", so reading a
page asks Redis for one window of ``limit`` (+1) messages whatever the length of the history.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from django.utils.translation import gettext_lazy as _
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from .exceptions import InvalidInput
from .store import ConversationStore, Message

# Far above any session's length, far below anything Redis could not take as a list index.
_MAX_POSITION = 2**40


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
            if position <= _MAX_POSITION:
                return cls("after" if kind == "a" else "before", position)
        raise InvalidInput(str(_("This cursor is not valid.")), field="cursor")


@dataclass(frozen=True, slots=True)
class MessagePage:
    results: list[Message]
    next: MessageCursor | None
    previous: MessageCursor | None


def read_message_page(
    store: ConversationStore, session_id: str, *, owner: str, limit: int, cursor: MessageCursor | None
) -> MessagePage:
    """One page of messages, oldest first, costing one window read. Raises ``SessionNotFound``."""
    if cursor is not None and cursor.direction == "before":
        before = cursor.position
        # Ids are positions: the ids below ``before`` are 1..before-1, so no extra item is needed to know
        # whether an earlier page exists.
        results = store.get_messages(session_id, owner=owner, before=before, limit=limit)
        has_previous = bool(results) and results[0].id > 1
        has_next = bool(results)
    else:
        after = cursor.position if cursor is not None else 0
        # One message more than the page tells whether a next page exists.
        window = store.get_messages(session_id, owner=owner, after=after, limit=limit + 1)
        results = [message for message in window if message.id <= after + limit]
        has_next = len(window) > len(results)
        has_previous = (results[0].id if results else after + 1) > 1
        if not results and has_previous:
            # Past the end: offer the last page before it.
            return MessagePage([], None, MessageCursor("before", after + 1))
    return MessagePage(
        results=results,
        next=MessageCursor("after", results[-1].id) if has_next else None,
        previous=MessageCursor("before", results[0].id) if has_previous else None,
    )


def page_link(request: Request, cursor: str | None) -> str | None:
    """The absolute URL of this listing with ``cursor`` in its query string (``limit`` is kept)."""
    if cursor is None:
        return None
    return replace_query_param(request.build_absolute_uri(), "cursor", cursor)

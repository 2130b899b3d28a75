"""Cursor pagination for the HTTP API, in DRF's ``{next, previous, results}`` shape.

Sessions page with the store's own cursor (most recently active first; forward only). Messages page
by position: a message cursor is an opaque encoding of "after id A" or "before id B", so reading a
page asks Redis for one window of ``limit`` (+1) messages whatever the length of the history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote_plus

from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from .store import ConversationStore, Message
from .store.codec import MessageCursor

__all__ = ["MessageCursor", "MessagePage", "page_link", "read_message_page"]

# A query string whose every parameter is ``name=value`` in characters URL quoting leaves alone.
_PLAIN_QUERY = re.compile(r"[\w.~-]+=[\w.~-]*(?:&[\w.~-]+=[\w.~-]*)*", re.ASCII)


@dataclass(frozen=True, slots=True)
class MessagePage:
    results: list[Message]
    next: MessageCursor | None
    previous: MessageCursor | None


def read_message_page(
    store: ConversationStore, session_id: str, *, owner: str, limit: int, cursor: MessageCursor | None
) -> MessagePage:
    """One page of messages, oldest first, costing one window read. Raises ``SessionNotFound``.

    Ids only grow but may have gaps (removed messages), so each read asks for one message more than
    the page: its presence says whether a page lies beyond.
    """
    if cursor is not None and cursor.direction == "before":
        window = store.get_messages(session_id, owner=owner, before=cursor.position, limit=limit + 1)
        results = window[-limit:] if len(window) > limit else window
        has_previous = len(window) > limit
        has_next = bool(results)
    else:
        after = cursor.position if cursor is not None else 0
        window = store.get_messages(session_id, owner=owner, after=after, limit=limit + 1)
        results = window[:limit]
        has_next = len(window) > limit
        has_previous = after > 0
        if not results and has_previous:
            # Past the end: offer the last page before it.
            return MessagePage([], None, MessageCursor("before", after + 1))
    return MessagePage(
        results=results,
        next=MessageCursor("after", results[-1].id) if has_next else None,
        previous=MessageCursor("before", results[0].id) if has_previous and results else None,
    )


def page_link(request: Request, cursor: str | None) -> str | None:
    """The absolute URL of this listing with ``cursor`` in its query string (``limit`` is kept)."""
    if cursor is None:
        return None
    url = request.build_absolute_uri()
    base, _, query = url.partition("?")
    if query and not _PLAIN_QUERY.fullmatch(query):
        return replace_query_param(url, "cursor", cursor)
    # What ``replace_query_param`` gives (the parameters sorted by name, ``cursor`` set), without
    # taking the URL apart and quoting it again: none of these characters is decoded or quoted, and
    # Django quotes any ``?`` or ``#`` of the path (so the first ``?`` starts the query, and no ``#``
    # starts a fragment). About half the time, on every page that has a link.
    params: dict[str, list[str]] = {}
    for pair in query.split("&") if query else ():
        name, _, value = pair.partition("=")
        params.setdefault(name, []).append(value)
    params["cursor"] = [quote_plus(cursor)]
    return f"{base}?" + "&".join(
        f"{name}={value}" for name, values in sorted(params.items()) for value in values
    )

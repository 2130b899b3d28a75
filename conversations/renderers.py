"""Renderers of the transcript export: ``?format=markdown`` (this module) beside DRF's ``?format=json``,
and the pieces the export streams (a header, then messages window by window) in either format."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from django.utils.dateparse import parse_datetime
from rest_framework.renderers import BaseRenderer, JSONRenderer

# A link target Markdown shows as is: http(s), no whitespace or characters that end a link.
_PLAIN_URL = re.compile(r"\Ahttps?://[^\s<>()\[\]`]+\Z")
_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


def _inline(text: str) -> str:
    """One line of literal text: newlines folded, Markdown's inline syntax escaped."""
    return _INLINE_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _when(value: Any) -> str:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC") if parsed is not None else str(value)


def _source_line(source: Any) -> str:
    if isinstance(source, Mapping):
        url, title = source.get("url"), source.get("title")
        if isinstance(url, str) and _PLAIN_URL.match(url):
            label = title if isinstance(title, str) and title.strip() else url
            return f"- [{_inline(label)}]({url})"
    return "- " + _inline(orjson.dumps(source).decode())


def _quoted(content: str) -> list[str]:
    """The content as a block quote: its Markdown still renders, but stays inside its message."""
    if not content.strip():
        return ["> *(empty)*"]
    return [f"> {line}" if line else ">" for line in content.splitlines()]


class FastJSONRenderer(JSONRenderer):
    """DRF's ``JSONRenderer``, encoding with orjson where the result is the same JSON.

    The views answer with plain dicts, lists, strings and numbers (built by ``message_json`` and
    ``session_json``), which orjson encodes some 20 times faster than ``json.dumps``: on a page of 20
    messages the encoding cost more than the page's Redis round trip. Anything orjson does not take as
    is (an ``ErrorDetail``, a lazy translation, an integer over 64 bits) and DRF's other modes
    (``indent``, ``COMPACT_JSON = False``, ``UNICODE_JSON = False``) go to DRF's own encoding. The
    output has the same separators and escapes U+2028/U+2029 as DRF does; only the spelling of some
    floats differs (``1e-7`` for ``1e-07``), the same numbers.
    """

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if (
            data is not None
            and self.compact
            and not self.ensure_ascii
            and self.get_indent(accepted_media_type or "", renderer_context or {}) is None
        ):
            try:
                encoded = orjson.dumps(data)
            except TypeError:
                pass
            else:
                # U+2028 and U+2029 are E2 80 A8 and E2 80 A9: most bodies hold no E2 byte at all,
                # which one memchr tells (searching for both sequences took three times the encoding).
                if b"\xe2" in encoded:
                    encoded = encoded.replace(b"\xe2\x80\xa8", b"\\u2028").replace(
                        b"\xe2\x80\xa9", b"\\u2029"
                    )
                return encoded
        rendered: bytes = super().render(data, accepted_media_type, renderer_context)
        return rendered


class MarkdownRenderer(BaseRenderer):
    """A session's transcript as Markdown: a header with its details, then one section per message.

    Message contents are written verbatim inside block quotes (chat messages are often Markdown
    already, and a quote keeps a heading in a message from passing for a new message); the title and
    sources are escaped so that they cannot break the document's structure either.
    """

    media_type = "text/markdown"
    format = "markdown"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        # Errors never reach this renderer: the export view answers them in JSON.
        return self.render_transcript(data).encode("utf-8")

    def render_transcript(self, session: Mapping[str, Any]) -> str:
        messages = session.get("messages") or []
        return markdown_header(session) + "".join(markdown_message(message) for message in messages)


def markdown_header(session: Mapping[str, Any]) -> str:
    """The document's head: the title, then the session's details (the export streams the rest)."""
    lines = [f"# {_inline(str(session.get('title') or '')) or 'Conversation'}", ""]
    lines.append(f"- Session: `{session.get('id', '')}`")
    lines.append(f"- Created: {_when(session.get('created_at'))}")
    lines.append(f"- Updated: {_when(session.get('updated_at'))}")
    lines.append(f"- Messages: {session.get('message_count', 0)}")
    metadata = session.get("metadata")
    if metadata:
        lines.append(f"- Metadata: {_inline(orjson.dumps(metadata).decode())}")
    return "\n".join(lines) + "\n"


def markdown_message(message: Mapping[str, Any]) -> str:
    """One message's section, to follow the header or the previous message's section."""
    lines = ["", f"## {message.get('id')}. {_inline(str(message.get('role', '')))}", ""]
    lines.append(f"*{_when(message.get('created_at'))}*")
    lines.append("")
    lines += _quoted(str(message.get("content", "")))
    sources = message.get("sources") or []
    if sources:
        lines += ["", "Sources:", ""]
        lines += [_source_line(source) for source in sources]
    return "\n".join(lines) + "\n"


def transcript_json_chunks(
    session: Mapping[str, Any], windows: Iterable[Sequence[Mapping[str, Any]]]
) -> Iterator[bytes]:
    """``{...the session..., "messages": [...]}`` in pieces, one per window of messages, encoded as
    the API's other responses are (``FastJSONRenderer``)."""
    render = FastJSONRenderer().render
    head = render(dict(session))
    yield head[:-1] + (b',"messages":[' if len(head) > 2 else b'"messages":[')
    separator = b""
    for window in windows:
        if window:
            yield separator + render(list(window))[1:-1]
            separator = b","
    yield b"]}"

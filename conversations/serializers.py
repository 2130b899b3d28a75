"""DRF serializers for the HTTP API: plain ``Serializer`` classes over the store's records.

They check the *shape* of the input: types, and which fields exist. The limits (sizes, nesting, the
encodability of JSON) are the store's job: it raises ``InvalidInput`` naming the field, and the views
turn that into the same ``{field: [message]}`` body DRF gives, so each rule is written once. The role
choices and the length limits are also given to the fields, read from the settings when a serializer is
built, so that the browsable API's forms and the OpenAPI schema show them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from .schema import extend_schema_field, extend_schema_serializer, has_openapi
from .store import Message, SessionSummary, StoreConfig, store_config
from .store.validation import MAX_MESSAGE_ID, MAX_TOKEN_COUNT, STATUSES

# The store's bounds on integers inside metadata and sources (JSON that fits a 64-bit integer).
JSON_INT_MIN = -(2**63)
JSON_INT_MAX = 2**64 - 1

# Query-string integers: ASCII digits only. Python's int() (and so DRF's IntegerField) also takes
# " 5", "1_0" and other scripts' digits (fullwidth ones, say), none of which a client means as a number.
_ASCII_INTEGER = re.compile(r"-?[0-9]{1,20}")

# What a JSON value is called in an error message (the body is JSON; Python's names mean nothing there).
_JSON_TYPE_NAMES: tuple[tuple[type, Any], ...] = (
    (bool, _("a boolean")),
    (int, _("a number")),
    (float, _("a number")),
    (list, _("a list")),
    (dict, _("an object")),
)


def json_type_name(value: Any) -> str:
    for kind, name in _JSON_TYPE_NAMES:
        if isinstance(value, kind):
            return str(name)
    return type(value).__name__


def utc_text(value: datetime) -> str:
    """A time in UTC with milliseconds, always the same shape: ``2026-12-01T19:34:56.000Z``."""
    if value.tzinfo is not UTC:  # the store's times are in UTC already
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # ``isoformat(timespec="milliseconds")`` less its offset, in about half the time (a page of 20
    # sessions formats 60 of these); an f-string with format specs takes twice as long as ``%``.
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond // 1000,
    )


class UTCTimeField(serializers.DateTimeField):
    """A time in UTC with milliseconds, always the same shape: ``2026-12-01T19:34:56.000Z``.

    The store keeps milliseconds, so nothing is lost. DRF's own format drops the fraction when a time
    falls on a whole second (one in a thousand), which trips clients that parse one fixed shape.
    """

    def to_representation(self, value: Any) -> Any:
        if value is None or isinstance(value, str):  # nothing to render, or already rendered
            return value
        return utc_text(value)


class StringChoiceField(serializers.ChoiceField):
    """A choice among strings; another JSON type is named, not printed as Python (``"['user']"``)."""

    default_error_messages = {"not_a_string": _("Expected a string, got {type}.")}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("not_a_string", type=json_type_name(data))
        return super().to_internal_value(data)


class ASCIIIntegerField(serializers.IntegerField):
    """An integer; written in a query string or form, only as ASCII digits (with an optional minus)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and not _ASCII_INTEGER.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class JSONInputField(serializers.JSONField):
    """A JSON value; in an HTML form a blank box means "not given" instead of "invalid JSON"."""

    def get_value(self, dictionary: Any) -> Any:
        value = super().get_value(dictionary)
        if getattr(value, "is_json_string", False) and not value.strip():
            return serializers.empty
        return value


class TextField(serializers.CharField):
    """A string, and only a string: DRF's CharField would quietly turn ``42`` or ``true`` into text.

    NUL characters are kept, as the store keeps them (DRF refuses them by default for the sake of SQL
    databases, which play no part here); lone surrogates are still refused, since no UTF-8 can hold them.
    """

    default_error_messages = {"not_a_string": _("Expected a string, got {type}.")}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)]

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string", type=json_type_name(data))
        return super().to_internal_value(data)


class MetadataField(JSONInputField):
    """Free-form JSON object kept with a session."""


class SourcesField(JSONInputField):
    """Citations of a message: a list of JSON objects (for example ``{"url": ..., "title": ...}``)."""


class MessageDataField(JSONInputField):
    """A message's own JSON object (tool calls, usage, ...), kept verbatim."""


# Any JSON value, with the store's integer bounds stated where a schema-driven client can see them: a
# generator given ``{}`` sends integers of any size, which the store refuses. (``number`` excludes the
# integers, or the integer bounds would bind nothing.) Nesting depth and encoded size are in words.
JSON_VALUE_COMPONENT = "JSONValue"
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": f"Any JSON value; integers from {JSON_INT_MIN} to {JSON_INT_MAX} (64 bits).",
    "anyOf": [
        {"type": "string", "nullable": True},
        {"type": "boolean"},
        {"type": "integer", "minimum": JSON_INT_MIN, "maximum": JSON_INT_MAX},
        {"type": "number", "not": {"type": "integer"}},
        {"type": "array", "items": {"$ref": f"#/components/schemas/{JSON_VALUE_COMPONENT}"}},
        {
            "type": "object",
            "additionalProperties": {"$ref": f"#/components/schemas/{JSON_VALUE_COMPONENT}"},
        },
    ],
}


class MessageSerializer(serializers.Serializer[Any]):
    """A stored message, as the API returns it."""

    id = serializers.IntegerField(
        read_only=True,
        help_text=_("Orders the session's messages, from 1; never reused (a removal leaves a gap)."),
    )
    role = serializers.CharField(read_only=True)
    content = serializers.CharField(read_only=True)
    sources = SourcesField(read_only=True)
    created_at = UTCTimeField(read_only=True)
    status = serializers.ChoiceField(
        choices=list(STATUSES),
        read_only=True,
        help_text=_("`completed`, `in_progress` (still being written) or `incomplete` (stopped early)."),
    )
    # A field named like ``Serializer.data``: DRF's metaclass takes declared fields off the class.
    data = MessageDataField(  # type: ignore[assignment]
        read_only=True, help_text=_("The message's own JSON object ({} when none).")
    )
    token_count = serializers.IntegerField(
        read_only=True, allow_null=True, help_text=_("The caller's token count, or null.")
    )


def _status_field(**kwargs: Any) -> StringChoiceField:
    return StringChoiceField(
        choices=list(STATUSES),
        help_text=_("`completed`, `in_progress` (to stream the rest in with `extend/`) or `incomplete`."),
        **kwargs,
    )


def _data_field(cfg: StoreConfig, **kwargs: Any) -> MessageDataField:
    return MessageDataField(
        style={"base_template": "textarea.html", "rows": 2},
        help_text=_(
            "Optional JSON object of your own (tool calls, usage...); at most %(bytes)s bytes encoded, "
            "%(depth)s levels deep."
        )
        % {"bytes": cfg.max_message_data_bytes, "depth": cfg.max_json_depth},
        **kwargs,
    )


def _token_count_field(**kwargs: Any) -> ASCIIIntegerField:
    return ASCIIIntegerField(
        allow_null=True,
        min_value=0,
        max_value=MAX_TOKEN_COUNT,
        help_text=_("Optional token count of the content, used by `context/`; null when unknown."),
        **kwargs,
    )


def _content_field(cfg: StoreConfig, **kwargs: Any) -> TextField:
    # Kept exactly as sent: no trimming, and an empty message (a tool's, say) is allowed.
    return TextField(
        allow_blank=True,
        trim_whitespace=False,
        max_length=cfg.max_message_length,
        style={"base_template": "textarea.html", "rows": 4},
        **kwargs,
    )


class MessageCreateSerializer(serializers.Serializer[Any]):
    """The body of `POST /sessions/{id}/messages/` (one message; a list of them is a batch)."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # Built per instance: the roles and the limits are settings, read at call time (from the
        # store's cached configuration, so the API and the store enforce the very same values).
        cfg = store_config()
        return {
            "role": StringChoiceField(choices=list(cfg.roles), help_text=_("Who wrote the message.")),
            "content": _content_field(cfg, help_text=_("The message text.")),
            "sources": SourcesField(
                required=False,
                initial=list,  # type: ignore[arg-type]  # (the stubs expect a mapping; any JSON will do)
                style={"base_template": "textarea.html", "rows": 2},
                help_text=_(
                    'Optional citations: a JSON list of objects such as [{"url": "https://…"}]; at most '
                    "%(count)s of them, %(bytes)s bytes encoded, %(depth)s levels deep."
                )
                % {"count": cfg.max_sources, "bytes": cfg.max_sources_bytes, "depth": cfg.max_json_depth},
            ),
            "status": _status_field(required=False),
            "data": _data_field(cfg, required=False, allow_null=True),
            "token_count": _token_count_field(required=False),
        }


#: Messages one ``POST .../messages/`` may append (a list body); more is a 400.
MAX_BATCH_MESSAGES = 100


class MessageBatchSerializer(serializers.Serializer[Any]):
    """A list of 1 to 100 messages appended all or nothing. It stands for that list in the schema
    (``schema_fields``: an array of ``MessageCreate`` with its bounds, which drf-spectacular does not
    read from a ``ListSerializer``); the view validates the list with ``MessageCreateSerializer``."""


class MessageCreateOrBatchSerializer(serializers.Serializer[Any]):
    """The body of `POST /sessions/{id}/messages/`: one message, or a list of 1 to 100 appended all or
    nothing. A stand-in for the schema (``schema_fields``), as ``MessageBatchSerializer``."""


class MessageUpdateSerializer(serializers.Serializer[Any]):
    """The body of `PATCH /sessions/{id}/messages/{message_id}/`: any of the fields; the others stay."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        cfg = store_config()
        return {
            "content": _content_field(cfg, required=False, help_text=_("The new text (replaces it).")),
            "status": _status_field(required=False),
            "data": _data_field(cfg, required=False, allow_null=True),
            "token_count": _token_count_field(required=False),
        }


class MessageExtendSerializer(serializers.Serializer[Any]):
    """The body of `POST /sessions/{id}/messages/{message_id}/extend/`."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return {
            "text": _content_field(
                store_config(), help_text=_("Text to add at the end of the in-progress message.")
            ),
        }


class TruncateSerializer(serializers.Serializer[Any]):
    """The body of `POST /sessions/{id}/truncate/`."""

    after = ASCIIIntegerField(
        min_value=0,
        max_value=MAX_MESSAGE_ID,
        help_text=_("Remove every message whose id is above this one (0 removes them all)."),
    )


class TruncateResultSerializer(serializers.Serializer[Any]):
    """What `POST /sessions/{id}/truncate/` removed."""

    removed = serializers.IntegerField(read_only=True, help_text=_("How many messages were removed."))


class ContextQuerySerializer(serializers.Serializer[Any]):
    """The query string of `GET /sessions/{id}/context/`."""

    max_tokens = ASCIIIntegerField(
        min_value=1, max_value=MAX_TOKEN_COUNT, help_text=_("The token budget of the messages returned.")
    )
    include_system = serializers.BooleanField(
        required=False,
        default=True,
        help_text=_("Whether the session's leading `system` messages come first (default true)."),
    )


class SessionSerializer(serializers.Serializer[Any]):
    """A session without its messages."""

    id = serializers.CharField(read_only=True)
    title = serializers.CharField(read_only=True)
    metadata = MetadataField(read_only=True)
    created_at = UTCTimeField(read_only=True)
    updated_at = UTCTimeField(read_only=True)
    expires_at = UTCTimeField(
        read_only=True, allow_null=True, help_text=_("When the session expires unless written to again.")
    )
    message_count = serializers.IntegerField(read_only=True)


class SessionDetailSerializer(SessionSerializer):
    """A session with its newest messages (up to 50), oldest first, and where to read the others."""

    messages = MessageSerializer(
        many=True, read_only=True, help_text=_("The newest messages (at most 50), oldest first.")
    )
    messages_complete = serializers.BooleanField(
        read_only=True,
        help_text=_("True when `messages` holds every message of the session; false when older ones exist."),
    )
    messages_url = serializers.URLField(
        read_only=True, help_text=_("The session's messages, a page at a time, from the first.")
    )
    earlier_messages_url = serializers.URLField(
        read_only=True,
        allow_null=True,
        help_text=_("The page of messages just before the first one in `messages`; null when complete."),
    )


class TranscriptSerializer(SessionSerializer):
    """A session with all its messages, oldest first: the JSON export."""

    messages = MessageSerializer(many=True, read_only=True)


def message_json(message: Message) -> dict[str, Any]:
    """``MessageSerializer(message).data``, built directly: the views answer with these on every
    request, and DRF's field-by-field representation cost more than the store's whole round trip. A
    test holds the two to the same output."""
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "sources": message.sources,
        "created_at": utc_text(message.created_at),
        "status": message.status,
        "data": message.data,
        "token_count": message.token_count,
    }


def session_json(session: SessionSummary) -> dict[str, Any]:
    """``SessionSerializer(session).data``, built directly (as ``message_json``)."""
    expires_at = session.expires_at
    return {
        "id": session.id,
        "title": session.title,
        "metadata": session.metadata,
        "created_at": utc_text(session.created_at),
        "updated_at": utc_text(session.updated_at),
        "expires_at": None if expires_at is None else utc_text(expires_at),
        "message_count": session.message_count,
    }


class SessionWriteSerializer(serializers.Serializer[Any]):
    """The body of `POST /sessions/` and `PATCH /sessions/{id}/`."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        cfg = store_config()
        return {
            "title": TextField(
                required=False,
                allow_blank=True,
                trim_whitespace=False,
                max_length=cfg.max_title_length,
                help_text=_("A short name for the session."),
            ),
            "metadata": MetadataField(
                required=False,
                initial=dict,
                style={"base_template": "textarea.html", "rows": 3},
                help_text=_(
                    'Free-form JSON object, for example {"model": "gpt-x"}; at most %(bytes)s bytes '
                    "encoded, %(depth)s levels deep, integers within 64 bits."
                )
                % {"bytes": cfg.max_metadata_bytes, "depth": cfg.max_json_depth},
            ),
        }


# Cursors are URL-safe base64 without padding: of "<activity ms>.<session id>" for sessions (24 bytes
# at least, starting with a digit: "M", "N" or "O"), of "a<id>" or "b<id>" for messages (starting with
# "Y"). Stated so that a schema-driven client does not send "0"; the store checks a cursor fully.
@extend_schema_field({"type": "string", "pattern": r"^[MNO][A-Za-z0-9_-]{31,199}$"})
class SessionCursorField(serializers.CharField):
    """A cursor from a previous page of sessions."""


@extend_schema_field({"type": "string", "pattern": r"^Y[A-Za-z0-9_-]{2,21}$"})
class MessageCursorField(serializers.CharField):
    """A cursor from a previous page of messages."""


class PageQuerySerializer(serializers.Serializer[Any]):
    """The query string of a paginated listing (of messages; ``SessionPageQuerySerializer`` for sessions)."""

    cursor_field: type[serializers.CharField] = MessageCursorField

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return {
            "limit": ASCIIIntegerField(
                required=False,
                default=20,
                min_value=1,
                max_value=100,
                help_text=_("Items per page, 1 to 100."),
            ),
            "cursor": self.cursor_field(
                required=False,
                max_length=200,
                trim_whitespace=False,
                help_text=_("Opaque cursor from a previous page's `next` or `previous` link."),
            ),
        }


class SessionPageQuerySerializer(PageQuerySerializer):
    """The query string of a listing of sessions."""

    cursor_field = SessionCursorField


@extend_schema_serializer(many=False)
class SessionPageSerializer(serializers.Serializer[Any]):
    """One page of sessions, most recently active first."""

    next = serializers.URLField(allow_null=True, read_only=True)
    previous = serializers.URLField(
        allow_null=True, read_only=True, help_text=_("Always null: session pages only go forward.")
    )
    results = SessionSerializer(many=True, read_only=True)


class MessagePageSerializer(serializers.Serializer[Any]):
    """One page of messages, oldest first."""

    next = serializers.URLField(allow_null=True, read_only=True)
    previous = serializers.URLField(allow_null=True, read_only=True)
    results = MessageSerializer(many=True, read_only=True)


class ErrorSerializer(serializers.Serializer[Any]):
    """The body of every error but 400: a human-readable `detail`."""

    detail = serializers.CharField(read_only=True)


VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Field errors, `{field: [message, ...]}` (`non_field_errors` for the body as a whole), "
    "or `{detail: message}` when the body could not be parsed.",
    "additionalProperties": {
        "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
    },
    "example": {"content": ["This field is required."]},
}

# A list body's errors: one object per message (``{}`` for a good one), in the order sent.
BATCH_VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "oneOf": [
        VALIDATION_ERROR_SCHEMA,
        {"type": "array", "items": {k: v for k, v in VALIDATION_ERROR_SCHEMA.items() if k != "example"}},
    ],
}


if has_openapi():  # the schema extensions register themselves with drf-spectacular when defined
    from . import schema_fields  # noqa: F401

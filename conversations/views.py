"""The HTTP API: one ViewSet over the conversation store.

Data flows one way: the view resolves the owner, a serializer checks the input's shape, the store
validates the limits and talks to Redis. The store's errors know nothing of HTTP; ``handle_exception``
translates them here, at the boundary, so a host project needs no ``EXCEPTION_HANDLER`` of its own.
"""

from __future__ import annotations

import copy
import io
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig, TooManyFieldsSent
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from .conf import conf
from .exceptions import (
    IdempotencyConflict,
    InvalidInput,
    MessageNotFound,
    MessageNotInProgress,
    SessionFull,
    SessionNotFound,
    StoreUnavailable,
)
from .pagination import MessageCursor, page_link, read_message_page
from .parsers import FastJSONParser
from .renderers import (
    FastJSONRenderer,
    MarkdownRenderer,
    markdown_header,
    markdown_message,
    transcript_json_chunks,
)
from .schema import (
    OpenApiParameter,
    OpenApiResponse,
    OpenApiTypes,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from .serializers import (
    BATCH_VALIDATION_ERROR_SCHEMA,
    MAX_BATCH_MESSAGES,
    VALIDATION_ERROR_SCHEMA,
    ContextQuerySerializer,
    ErrorSerializer,
    MessageCreateOrBatchSerializer,
    MessageCreateSerializer,
    MessageExtendSerializer,
    MessagePageSerializer,
    MessageSerializer,
    MessageUpdateSerializer,
    PageQuerySerializer,
    SessionDetailSerializer,
    SessionPageQuerySerializer,
    SessionPageSerializer,
    SessionSerializer,
    SessionWriteSerializer,
    TranscriptSerializer,
    TruncateResultSerializer,
    TruncateSerializer,
    message_json,
    session_json,
)
from .store import ConversationStore, Message, get_store
from .store.validation import MAX_MESSAGE_ID, is_session_id
from .throttling import ConversationsRateThrottle

logger = logging.getLogger("conversations")

#: Seconds a client is asked to wait (``Retry-After``) when Redis cannot be reached.
RETRY_AFTER_SECONDS = 5

IDEMPOTENCY_HEADER = "Idempotency-Key"

#: The newest messages ``GET /sessions/{id}/`` carries; the others are read a page at a time.
SESSION_HEAD_MESSAGES = 50

#: Messages the export reads from Redis at a time: its memory is bounded by one window, whatever the
#: length of the session. (Decoding a window briefly takes about 15 times its size: orjson's parse.)
EXPORT_WINDOW = 100

# ---------------------------------------------------------------------------------------------- errors


class SessionNotFoundError(exceptions.APIException):
    # One body for missing, expired, another owner's and malformed ids: none may be told apart.
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = _("Session not found.")
    default_code = "session_not_found"


class MessageNotFoundError(exceptions.APIException):
    # Only within a session the caller owns: another owner's session is a SessionNotFoundError first.
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = _("Message not found.")
    default_code = "message_not_found"


class MessageNotInProgressError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = _("Only a message whose status is in_progress can be extended.")
    default_code = "message_not_in_progress"


class SessionFullError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = _("This session holds the maximum number of messages; start a new session.")
    default_code = "session_full"


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = _("This Idempotency-Key was already used with a different request body.")
    default_code = "idempotency_key_reused"


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The request body is too large.")
    default_code = "request_too_large"


class LengthRequired(exceptions.APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_detail = _(
        "A chunked request body needs a server that passes it on whole (gunicorn, uvicorn); "
        "send a Content-Length header instead."
    )
    default_code = "length_required"


class StoreUnavailableError(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = _("The conversation store is unavailable. Retry shortly.")
    default_code = "store_unavailable"
    # DRF's exception handler turns ``wait`` into the Retry-After header.
    wait = RETRY_AFTER_SECONDS


def api_exception_for(exc: Exception) -> Exception:
    """The API error a domain (or request parsing) error stands for; other exceptions unchanged."""
    translated: Exception
    if isinstance(exc, SessionNotFound):
        translated = SessionNotFoundError()
    elif isinstance(exc, MessageNotFound):
        translated = MessageNotFoundError()
    elif isinstance(exc, MessageNotInProgress):
        translated = MessageNotInProgressError()
    elif isinstance(exc, InvalidInput):
        translated = exceptions.ValidationError(field_errors(exc))
    elif isinstance(exc, SessionFull):
        translated = SessionFullError()
    elif isinstance(exc, IdempotencyConflict):
        translated = IdempotencyKeyReused()
    elif isinstance(exc, StoreUnavailable):
        logger.warning("Answering 503: %s", exc)
        translated = StoreUnavailableError()
    elif isinstance(exc, RequestDataTooBig):
        translated = RequestTooLarge()
    elif isinstance(exc, TooManyFieldsSent):
        translated = exceptions.ParseError(str(exc))
    elif isinstance(exc, RecursionError):
        # Python's json module recurses once per nesting level, so a small body nested 100,000 deep
        # (in the body or in a form's JSON field) overflows the stack while DRF parses it. Nothing
        # else on a request recurses with the input (the store's checks are iterative).
        translated = exceptions.ParseError(_("JSON nested too deeply."))
    else:
        return exc
    translated.__cause__ = exc
    return translated


#: The fields of a message a client may send (others are ignored, as DRF's serializers ignore them).
MESSAGE_FIELDS = frozenset({"role", "content", "sources", "status", "data", "token_count"})

# How the store names a field of one message of a batch: ``messages[2].role``.
_BATCH_FIELD = re.compile(r"\Amessages\[(\d+)\]\.(\w+)\Z")


def field_errors(exc: InvalidInput, batch_size: int | None = None) -> Any:
    """The DRF 400 body of a store's ``InvalidInput``: ``{field: [message]}``, or for a batch of
    ``batch_size`` messages a list of such objects, one per message (``[{}, {"role": [...]}]``)."""
    field = exc.field or api_settings.NON_FIELD_ERRORS_KEY
    field = IDEMPOTENCY_HEADER if field == "idempotency_key" else field
    if batch_size is None:
        return {field: [exc.message]}
    match = _BATCH_FIELD.match(field)
    if match is not None and int(match.group(1)) < batch_size:
        index, field = int(match.group(1)), match.group(2)
    elif batch_size == 1 and field in MESSAGE_FIELDS:  # the store names a lone message's fields plainly
        index = 0
    else:
        return {field: [exc.message]}
    errors: list[dict[str, list[str]]] = [{} for _ in range(batch_size)]
    errors[index] = {field: [exc.message]}
    return errors


def read_chunked_body(request: Request) -> None:
    """Give a ``Transfer-Encoding: chunked`` body (which has no ``Content-Length``) to the parsers.

    Django sizes a WSGI body by ``Content-Length`` alone, so a chunked body reads as empty and the
    request fails with misleading field errors. A server that de-chunks the body and marks the input as
    ending with it (``wsgi.input_terminated``, as gunicorn does), or an ASGI server (Django has the
    whole body already), can be read to its end: up to ``DATA_UPLOAD_MAX_MEMORY_SIZE``, else 413. On
    any other server (runserver) the end of the body is unknown: 411, asking for a ``Content-Length``.
    """
    http = request._request
    meta = http.META
    if "chunked" not in str(meta.get("HTTP_TRANSFER_ENCODING", "")).lower() or meta.get("CONTENT_LENGTH"):
        return
    if isinstance(http, ASGIRequest):
        source = http._stream
    elif meta.get("wsgi.input_terminated"):
        source = meta["wsgi.input"]
    else:
        raise LengthRequired()
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = source.read() if limit is None else source.read(limit + 1)
    if limit is not None and len(body) > limit:
        raise RequestTooLarge()
    http._body = body
    http._stream = io.BytesIO(body)
    meta["CONTENT_LENGTH"] = str(len(body))


# ---------------------------------------------------------------------------------------------- owner

_UNRESOLVED = object()


# The resolver last imported, by its dotted path (importing it again cost as much as a Redis GET).
_resolver: tuple[str, Callable[[Any], Any]] | None = None


def _owner_resolver() -> Callable[[Any], Any]:
    global _resolver
    path = conf.OWNER_RESOLVER
    cached = _resolver
    if cached is None or cached[0] != path:
        cached = _resolver = (path, import_string(path))
    return cached[1]


# Per thread (Django's caches, and so their clients, are per thread): the store ``get_store()`` last
# gave, with what it was built from: settings.CONVERSATIONS (the object, and a copy of its contents
# then) and settings.CACHES. ``get_store()`` builds nothing again either, but finding its store (the
# cache alias's client, the configuration) cost a tenth of a request.
_store_memo = threading.local()


def current_store() -> ConversationStore:
    """``get_store()``, asked again only when ``settings.CONVERSATIONS`` (replaced or edited in place)
    or ``settings.CACHES`` changes."""
    raw, caches = getattr(settings, "CONVERSATIONS", None), getattr(settings, "CACHES", None)
    memo: tuple[Any, Any, Any, ConversationStore] | None = getattr(_store_memo, "value", None)
    if memo is not None and memo[0] is raw and memo[2] is caches and memo[1] == raw:
        return memo[3]
    store = get_store()
    _store_memo.value = (raw, copy.deepcopy(raw), caches, store)
    return store


def resolve_owner(request: Request) -> str | None:
    """The owner of ``request`` from ``CONVERSATIONS["OWNER_RESOLVER"]``, resolved once per request.

    Never taken from the body, the query string or a header: only the resolver (by default, the
    authenticated user, or the anonymous visitor's Django session) decides.
    """
    owner = request.__dict__.get("_conversations_owner", _UNRESOLVED)
    if owner is _UNRESOLVED:
        owner = _owner_resolver()(request)
        if owner is not None and not isinstance(owner, str):
            raise ImproperlyConfigured(
                f"CONVERSATIONS['OWNER_RESOLVER'] returned {type(owner).__name__}; expected str or None."
            )
        request.__dict__["_conversations_owner"] = owner
    assert owner is None or isinstance(owner, str)
    return owner


class HasConversationOwner(BasePermission):
    """Allows a request that has an owner; otherwise 401 or 403, as DRF's authenticators decide."""

    # Only seen by an authenticated request whose owner the resolver refused; the others get DRF's 401/403.
    message = _("No conversation owner could be determined for this request.")

    def has_permission(self, request: Request, view: APIView) -> bool:
        if resolve_owner(request) is None:
            return False
        # An anonymous owner is identified by the session cookie alone, which a browser also sends on
        # cross-site requests; DRF only checks CSRF for authenticated users, so do it here. (The
        # browsable API checks permissions on a copy of a GET request to draw its forms: the method
        # that counts is the real one.)
        if request.successful_authenticator is None and request._request.method not in SAFE_METHODS:
            SessionAuthentication().enforce_csrf(request)
        return True


# ---------------------------------------------------------------------------------------------- schema

SESSION_ID_PARAMETER = OpenApiParameter(
    "id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    pattern=r"^[A-Za-z0-9_-]{22}$",
    description=_("The session id (22 URL-safe characters)."),
)

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    # Printable ASCII; no blank at either end, since HTTP strips it from header values.
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-~]([ -~]*[!-~])?$"},
    OpenApiParameter.HEADER,
    required=False,
    description=_(
        "Any printable ASCII string up to 255 characters, unique per logical request. A retry with the "
        "same key and body returns the first response and writes nothing; the same key with another "
        "body gets 422. Keys are scoped to the owner and live as long as the session."
    ),
)

MESSAGE_ID_PARAMETER = OpenApiParameter(
    "message_id",
    {"type": "integer", "minimum": 1, "maximum": MAX_MESSAGE_ID},
    OpenApiParameter.PATH,
    description=_("The message id (from 1; a message keeps its id for good)."),
)

RETRY_AFTER_PARAMETER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[429, 503],
    description=_("Seconds to wait before retrying."),
)


def json_body(serializer: type[BaseSerializer[Any]]) -> dict[str, type[BaseSerializer[Any]]]:
    """A JSON request body. The views also take the HTML forms of the browsable API (form-encoded or
    multipart), but those cannot carry nested JSON faithfully, so the schema documents JSON only."""
    return {"application/json": serializer}


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


ERROR_RESPONSES: dict[int, OpenApiResponse] = {
    400: OpenApiResponse(VALIDATION_ERROR_SCHEMA, description="Invalid input, a bad cursor or limit."),
    401: _error("Not authenticated (with a `WWW-Authenticate` challenge when HTTP Basic is enabled)."),
    403: _error("Not authenticated (session authentication only), not allowed, or a CSRF failure."),
    404: _error("No such session: missing, expired, another owner's or a malformed id (all alike)."),
    409: _error("The session already holds `MAX_MESSAGES` messages."),
    411: _error("A chunked body on a server that cannot pass it on whole: send `Content-Length`."),
    413: _error("The request body exceeds `DATA_UPLOAD_MAX_MEMORY_SIZE`."),
    415: _error("The request body's content type is not supported."),
    422: _error("The `Idempotency-Key` was used before with a different body."),
    429: _error("Throttled (scope `conversations`); see `Retry-After`."),
    503: _error(f"Redis cannot be reached; retry after `Retry-After` ({RETRY_AFTER_SECONDS}) seconds."),
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Error responses of an operation; every one can be throttled or meet an unavailable Redis."""
    return {code: ERROR_RESPONSES[code] for code in (*codes, 401, 403, 429, 503)}


def _message_errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Error responses of an operation on one message (its 404 also covers the message)."""
    return {
        **_errors(*codes),
        404: _error(
            "No such session (missing, expired, another owner's or a malformed id, all alike), or no "
            "such message in your session (never was, or removed)."
        ),
    }


MESSAGE_OR_LIST = PolymorphicProxySerializer(
    component_name="MessageOrList",
    serializers=[MessageSerializer, MessageSerializer(many=True)],
    resource_type_field_name=None,
    many=False,
)


# ---------------------------------------------------------------------------------------------- views

TAGS = ["conversations"]


@extend_schema_view(
    list=extend_schema(
        tags=TAGS,
        summary="List your sessions",
        parameters=[SessionPageQuerySerializer, RETRY_AFTER_PARAMETER],
        responses={200: SessionPageSerializer, **_errors(400)},
    ),
    create=extend_schema(
        tags=TAGS,
        summary="Create a session",
        parameters=[IDEMPOTENCY_PARAMETER, RETRY_AFTER_PARAMETER],
        request=json_body(SessionWriteSerializer),
        responses={201: SessionSerializer, **_errors(400, 411, 413, 415, 422)},
    ),
    retrieve=extend_schema(
        tags=TAGS,
        summary="Read a session with its messages",
        parameters=[SESSION_ID_PARAMETER, RETRY_AFTER_PARAMETER],
        responses={200: SessionDetailSerializer, **_errors(404)},
    ),
    partial_update=extend_schema(
        tags=TAGS,
        summary="Change a session's title or metadata",
        parameters=[SESSION_ID_PARAMETER, RETRY_AFTER_PARAMETER],
        request=json_body(SessionWriteSerializer),
        responses={200: SessionSerializer, **_errors(400, 404, 411, 413, 415)},
    ),
    destroy=extend_schema(
        tags=TAGS,
        summary="Delete a session",
        parameters=[SESSION_ID_PARAMETER, RETRY_AFTER_PARAMETER],
        responses={204: OpenApiResponse(description="Deleted."), **_errors(404)},
    ),
)
class SessionViewSet(viewsets.GenericViewSet[Any]):
    """Your chat sessions, most recently active first.

    POST a title and free-form JSON metadata (both optional) to start a session.
    A session expires when nobody has written to it for a while; every write renews it.
    Only you can see your sessions: any other id answers 404.
    """

    # Ids are matched by the store, not the URL pattern, so that a malformed id gets the same 404 body
    # as a missing one.
    lookup_field = "id"
    lookup_value_regex = "[^/]+"
    permission_classes = [HasConversationOwner]
    # The store pages by cursor and has no querysets: the host's default paginator and filter backends
    # (which would wrap the schema and make the browsable API ask for a queryset) do not apply here.
    pagination_class = None
    filter_backends: list[Any] = []

    # ------------------------------------------------------------------ plumbing

    @property
    def store(self) -> ConversationStore:
        return current_store()

    @property
    def owner(self) -> str:
        owner = resolve_owner(self.request)
        assert owner is not None, "HasConversationOwner lets no request without an owner through"
        return owner

    @property
    def session_id(self) -> str:
        return str(self.kwargs[self.lookup_url_kwarg or self.lookup_field])

    @property
    def idempotency_key(self) -> str | None:
        # The store checks its form (printable ASCII, at most 255 characters) and answers 400 otherwise.
        return self.request.headers.get(IDEMPOTENCY_HEADER)

    @property
    def message_id(self) -> int:
        """The message id of the URL. A malformed one names no message: 404, before any I/O (after the
        session id's own check, so that a malformed session id stays the session's 404)."""
        raw = str(self.kwargs["message_id"])
        if not is_session_id(self.session_id):
            raise SessionNotFound(self.session_id)
        if not _MESSAGE_ID.fullmatch(raw) or int(raw) > MAX_MESSAGE_ID:
            raise MessageNotFound(f"{self.session_id}/{raw}")
        return int(raw)

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        # The browsable API and OPTIONS describe a form by asking with a copy of the request that carries
        # the form's method, so decide by that method (OPTIONS leaves ``action`` unset).
        method = str(getattr(self.request, "method", None) or "GET").lower()
        action = getattr(self, "action_map", {}).get(method) or self.action
        return _SERIALIZERS.get((action, method)) or _SERIALIZERS.get((action, "")) or SessionSerializer

    def get_queryset(self) -> Any:
        # The browsable API asks a view that answers a list (a batch, the context) for its queryset, to
        # draw the filter backends' forms; there are no querysets here, and no filter backends.
        return []

    def get_throttles(self) -> list[BaseThrottle]:
        # The host's default throttles still apply; the ``conversations`` scope comes on top.
        return [*super().get_throttles(), ConversationsRateThrottle()]

    def get_parsers(self) -> list[BaseParser]:
        # DRF's own JSONParser (not a host's subclass of it) gives way to the same parsing, done faster.
        return [
            FastJSONParser() if type(parser) is JSONParser else parser for parser in super().get_parsers()
        ]

    def get_renderers(self) -> list[BaseRenderer]:
        if self.action == "export":
            # DRF reserves ?format= for choosing a renderer: the export's formats are its renderers.
            renderers: list[BaseRenderer] = [FastJSONRenderer(), MarkdownRenderer()]
            renderers += [r for r in super().get_renderers() if isinstance(r, BrowsableAPIRenderer)]
            return renderers
        # DRF's own JSONRenderer (not a host's subclass of it) gives way to the same JSON, encoded faster.
        return [
            FastJSONRenderer() if type(renderer) is JSONRenderer else renderer
            for renderer in super().get_renderers()
        ]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # DRF ignores an empty ?format= and picks the default; the export documents format as json or
        # markdown, so an empty one is unknown like any other (404, as DRF answers an unknown format).
        override = api_settings.URL_FORMAT_OVERRIDE
        if not force and self.action == "export" and override and request.query_params.get(override) == "":
            raise exceptions.NotFound()
        return super().perform_content_negotiation(request, force)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Django enforces DATA_UPLOAD_MAX_MEMORY_SIZE only when the whole body is read, and not for
        # uploaded files at all: refuse an oversize body before anything reads it.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            raise RequestTooLarge()
        read_chunked_body(request)
        super().initial(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        return super().handle_exception(api_exception_for(exc))

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(getattr(request, "accepted_renderer", None), MarkdownRenderer) and (
            response.status_code >= 400
        ):
            # An error is no transcript: answer it in JSON, which every client can read.
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    def _query(self, serializer_class: type[BaseSerializer[Any]] = PageQuerySerializer) -> dict[str, Any]:
        # A plain dict, not the QueryDict: DRF reads a QueryDict like an HTML form, where an empty
        # value means "not given"; in a query string ``?limit=`` is simply not a number.
        return self._validated(serializer_class(data=self.request.query_params.dict()))

    def _page_query(self, serializer_class: type[PageQuerySerializer]) -> tuple[int, str | None]:
        """``limit`` and ``cursor`` of a listing. The usual query (none, or ASCII digits and a cursor of
        URL-safe characters) is read directly; anything else goes through the serializer, which gives
        the same values and the field errors (building it cost a tenth of a page's time)."""
        params = self.request.query_params
        limit, cursor = params.get("limit"), params.get("cursor")
        if (limit is None or (_PLAIN_LIMIT.fullmatch(limit) and 1 <= int(limit) <= 100)) and (
            cursor is None or _PLAIN_CURSOR.fullmatch(cursor)
        ):
            return (20 if limit is None else int(limit)), cursor
        query = self._query(serializer_class)
        return query["limit"], query.get("cursor")

    def _validated(self, serializer: BaseSerializer[Any]) -> dict[str, Any]:
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(serializer.validated_data)
        return data

    # ------------------------------------------------------------------ sessions

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Your sessions, most recently active first, `limit` at a time (1 to 100, default 20)."""
        limit, cursor = self._page_query(SessionPageQuerySerializer)
        page = self.store.list_sessions_page(owner=self.owner, limit=limit, cursor=cursor)
        return Response(
            {
                "next": page_link(request, page.next_cursor),
                "previous": None,
                "results": [session_json(session) for session in page.sessions],
            }
        )

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Create a session. An `Idempotency-Key` header makes a retried create return the first session."""
        body = self._validated(self.get_serializer(data=request.data))
        session = self.store.create_session(
            body.get("metadata"),
            owner=self.owner,
            title=body.get("title", ""),
            idempotency_key=self.idempotency_key,
        )
        location = self.reverse_action("detail", kwargs={self.lookup_field: session.id})
        # A plain dict, so that the browsable API offers a blank form again instead of this response.
        return Response(session_json(session), status=status.HTTP_201_CREATED, headers={"Location": location})

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """One of your sessions with its newest messages (up to 50), oldest first.

        When the session holds more, messages_complete is false: read the others from messages_url
        (or earlier_messages_url, the page just before the first one shown).
        """
        session = self.store.get_session_head(self.session_id, owner=self.owner, last=SESSION_HEAD_MESSAGES)
        messages = session.messages
        complete = len(messages) >= session.message_count
        messages_url = self.reverse_action("messages", kwargs={self.lookup_field: session.id})
        earlier = None
        if not complete and messages:
            earlier = replace_query_param(
                messages_url, "cursor", MessageCursor("before", messages[0].id).encode()
            )
        return Response(
            {
                **session_json(session),
                "messages": [message_json(message) for message in messages],
                "messages_complete": complete,
                "messages_url": messages_url,
                "earlier_messages_url": earlier,
            }
        )

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Change the `title` and/or replace the `metadata` of a session (renews its expiry)."""
        body = self._validated(self.get_serializer(data=request.data, partial=True))
        summary = self.store.update_session(self.session_id, owner=self.owner, **body)
        return Response(session_json(summary))

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Delete a session and its messages."""
        if not self.store.delete_session(self.session_id, owner=self.owner):
            raise SessionNotFound(self.session_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    # ------------------------------------------------------------------ messages

    @extend_schema(
        methods=["GET"],
        tags=TAGS,
        summary="Read a page of messages",
        parameters=[SESSION_ID_PARAMETER, PageQuerySerializer, RETRY_AFTER_PARAMETER],
        responses={200: MessagePageSerializer, **_errors(400, 404)},
    )
    @extend_schema(
        methods=["POST"],
        tags=TAGS,
        summary="Append a message, or several",
        description="Append a message (`role`, `content`, optional `sources`, `status`, `data`, "
        "`token_count`) and return it as stored; or POST a list of up to "
        f"{MAX_BATCH_MESSAGES} messages to append them all or none (consecutive ids; field errors "
        'come as a list, one object per message: `[{}, {"role": [...]}]`), answered with the list. '
        "With an `Idempotency-Key` header, a retried POST returns the first result (same status, same "
        "message ids) instead of appending again.",
        parameters=[SESSION_ID_PARAMETER, IDEMPOTENCY_PARAMETER, RETRY_AFTER_PARAMETER],
        request=json_body(MessageCreateOrBatchSerializer),
        responses={
            201: MESSAGE_OR_LIST,
            **_errors(400, 404, 409, 411, 413, 415, 422),
            400: OpenApiResponse(
                BATCH_VALIDATION_ERROR_SCHEMA,
                description="Invalid input: field errors, or for a list a list of them, one per message.",
            ),
        },
    )
    @action(detail=True, methods=["get", "post"], url_path="messages", url_name="messages")
    def messages(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The messages of a session, oldest first, a page at a time.

        Page with the limit (1 to 100, default 20) and cursor query parameters, or follow next and previous.
        POST a role, the content and optional sources, status, data and token_count to append a message
        (a JSON list of messages appends them all or none).
        An Idempotency-Key header makes a retried POST return the first result instead of appending twice.
        """
        if request.method == "POST":
            return self._append(request)
        limit, raw_cursor = self._page_query(PageQuerySerializer)
        cursor = MessageCursor.decode(raw_cursor) if raw_cursor is not None else None
        page = read_message_page(self.store, self.session_id, owner=self.owner, limit=limit, cursor=cursor)
        return Response(
            {
                "next": page_link(request, page.next.encode() if page.next else None),
                "previous": page_link(request, page.previous.encode() if page.previous else None),
                "results": [message_json(message) for message in page.results],
            }
        )

    def _append(self, request: Request) -> Response:
        data = request.data
        if isinstance(data, list):
            return self._append_batch(data)
        try:
            if not _plain_message(data):  # the serializer's field errors, or its values
                data = self._validated(self.get_serializer(data=data))
            message = self.store.append_message(
                self.session_id,
                role=data["role"],
                content=data["content"],
                sources=data.get("sources"),
                status=data.get("status", "completed"),
                data=data.get("data"),
                token_count=data.get("token_count"),
                owner=self.owner,
                idempotency_key=self.idempotency_key,
            )
        except InvalidInput:
            # A plain body the store refused: the serializer's errors come first, as they would have.
            if data is request.data:
                self._validated(self.get_serializer(data=data))
            raise
        return Response(message_json(message), status=status.HTTP_201_CREATED)

    def _append_batch(self, items: Sequence[Any]) -> Response:
        plain = 0 < len(items) <= MAX_BATCH_MESSAGES and all(_plain_message(item) for item in items)
        if plain:
            items = [{k: v for k, v in item.items() if k in MESSAGE_FIELDS} for item in items]
        else:
            items = self._validated_batch(items)
        try:
            messages = self.store.append_messages(
                self.session_id, items, owner=self.owner, idempotency_key=self.idempotency_key
            )
        except InvalidInput as exc:
            if plain:
                self._validated_batch(items)
            raise exceptions.ValidationError(field_errors(exc, len(items))) from exc
        return Response([message_json(message) for message in messages], status=status.HTTP_201_CREATED)

    def _validated_batch(self, items: Sequence[Any]) -> Sequence[dict[str, Any]]:
        """Each message through the serializer; the errors as a list, one object per message (whatever
        the DRF version's ``ListSerializer`` would give: a list, or since 3.16 a dict by index)."""
        if not items:
            raise exceptions.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: [_("Give at least one message.")]}
            )
        if len(items) > MAX_BATCH_MESSAGES:
            message = _("At most %(count)s messages in one request.") % {"count": MAX_BATCH_MESSAGES}
            raise exceptions.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]})
        checked = [MessageCreateSerializer(data=item) for item in items]
        valid = [serializer.is_valid() for serializer in checked]  # every one, for its errors
        if not all(valid):
            raise exceptions.ValidationError([serializer.errors for serializer in checked])
        return [dict(serializer.validated_data) for serializer in checked]

    @extend_schema(
        methods=["GET"],
        operation_id="sessions_message_retrieve",
        tags=TAGS,
        summary="Read a message",
        parameters=[SESSION_ID_PARAMETER, MESSAGE_ID_PARAMETER, RETRY_AFTER_PARAMETER],
        responses={200: MessageSerializer, **_message_errors()},
    )
    @extend_schema(
        methods=["PATCH"],
        operation_id="sessions_message_partial_update",
        tags=TAGS,
        summary="Change a message",
        description="Change any of `content`, `status`, `data` and `token_count`; the fields not sent stay "
        "as they are. Returns the message as now stored.",
        parameters=[SESSION_ID_PARAMETER, MESSAGE_ID_PARAMETER, RETRY_AFTER_PARAMETER],
        request=json_body(MessageUpdateSerializer),
        responses={200: MessageSerializer, **_message_errors(400, 411, 413, 415)},
    )
    @extend_schema(
        methods=["DELETE"],
        operation_id="sessions_message_destroy",
        tags=TAGS,
        summary="Delete a message",
        description="Remove exactly that message; the others keep their ids.",
        parameters=[SESSION_ID_PARAMETER, MESSAGE_ID_PARAMETER, RETRY_AFTER_PARAMETER],
        responses={204: OpenApiResponse(description="Deleted."), **_message_errors()},
    )
    @action(
        detail=True,
        methods=["get", "patch", "delete"],
        url_path=r"messages/(?P<message_id>[^/]+)",
        url_name="message",
    )
    def message(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """One message of a session.

        PATCH any of content, status, data and token_count (the others stay as they are).
        DELETE removes just this message: the others keep their ids.
        """
        message_id = self.message_id
        if request.method == "DELETE":
            if not self.store.delete_message(self.session_id, message_id, owner=self.owner):
                raise MessageNotFound(f"{self.session_id}/{message_id}")
            return Response(status=status.HTTP_204_NO_CONTENT)
        if request.method == "PATCH":
            body = self._validated(self.get_serializer(data=request.data, partial=True))
            message = self.store.update_message(self.session_id, message_id, owner=self.owner, **body)
        else:
            message = self.store.get_message(self.session_id, message_id, owner=self.owner)
        return Response(message_json(message))

    @extend_schema(
        tags=TAGS,
        summary="Add text to an in-progress message",
        description="Append `text` to the content of a message whose status is `in_progress` (a reply "
        "being streamed into the store); concurrent extends all land. Set its status to `completed` "
        "with a PATCH when done. Extending a finished message is a 409.",
        parameters=[SESSION_ID_PARAMETER, MESSAGE_ID_PARAMETER, RETRY_AFTER_PARAMETER],
        request=json_body(MessageExtendSerializer),
        responses={
            200: MessageSerializer,
            **_message_errors(400, 409, 411, 413, 415),
            409: _error("The message's status is not `in_progress`."),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"messages/(?P<message_id>[^/]+)/extend",
        url_name="message-extend",
    )
    def extend(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Add text at the end of an in-progress message (status in_progress), as a reply streams in."""
        message_id = self.message_id
        body = self._validated(self.get_serializer(data=request.data))
        message = self.store.extend_message(self.session_id, message_id, body["text"], owner=self.owner)
        return Response(message_json(message))

    @extend_schema(
        tags=TAGS,
        summary="Remove every message after one",
        description="Remove every message whose id is above `after` (regenerate a reply, or edit a "
        "message and resubmit); `after: 0` empties the session, which stays. Ids are never reused.",
        parameters=[SESSION_ID_PARAMETER, RETRY_AFTER_PARAMETER],
        request=json_body(TruncateSerializer),
        responses={200: TruncateResultSerializer, **_errors(400, 404, 411, 413, 415)},
    )
    @action(detail=True, methods=["post"], url_path="truncate", url_name="truncate")
    def truncate(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Remove every message whose id is above after (after 0 removes them all); ids are never reused."""
        body = self._validated(self.get_serializer(data=request.data))
        removed = self.store.truncate_messages(self.session_id, after=body["after"], owner=self.owner)
        return Response({"removed": removed})

    @extend_schema(
        tags=TAGS,
        summary="The messages that fit a token budget",
        description="What to send a model, oldest first: the session's leading `system` messages (unless "
        "`include_system=false`), then the newest messages whose token counts fit in what is left of "
        "`max_tokens`. A message without `token_count` counts one token per 4 bytes of its content. The "
        "window never opens on a `tool` message. At most 1,000 messages.",
        parameters=[SESSION_ID_PARAMETER, ContextQuerySerializer, RETRY_AFTER_PARAMETER],
        responses={200: MessageSerializer(many=True), **_errors(400, 404)},
    )
    @action(detail=True, methods=["get"], url_path="context", url_name="context")
    def context(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The messages that fit a token budget (max_tokens), oldest first.

        The session's leading system messages come first unless include_system=false.
        """
        query = self._query(ContextQuerySerializer)
        messages = self.store.get_context(
            self.session_id,
            max_tokens=query["max_tokens"],
            include_system=query["include_system"],
            owner=self.owner,
        )
        return Response([message_json(message) for message in messages])

    # ------------------------------------------------------------------ export

    @extend_schema(
        tags=TAGS,
        summary="Download a transcript",
        description="The whole session as a download, streamed: it is read from Redis "
        f"{EXPORT_WINDOW} messages at a time, so a long session costs the server no more memory than "
        "a short one. Messages appended while it streams may or may not appear.",
        parameters=[
            SESSION_ID_PARAMETER,
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                enum=["json", "markdown"],
                description=_("`json` (the default) or `markdown`; the `Accept` header works too."),
            ),
            OpenApiParameter(
                "Content-Disposition",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[200],
                description=_('`attachment; filename="conversation-<id>.json"` (or `.md`).'),
            ),
            RETRY_AFTER_PARAMETER,
        ],
        responses={
            (200, "application/json"): TranscriptSerializer,
            (200, "text/markdown"): OpenApiResponse(
                {"type": "string"}, description="The transcript as a Markdown document."
            ),
            # Errors are always JSON, whatever format was asked for.
            **{(code, "application/json"): response for code, response in _errors(404).items()},
            (404, "application/json"): _error(
                "No such session (as for every operation), or an unknown format."
            ),
        },
    )
    @action(detail=True, methods=["get"], url_path="export", url_name="export")
    def export(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        """The whole transcript of a session, as a download.

        ?format=json (the default) gives the session and its messages as JSON.
        ?format=markdown gives a document to read or archive.
        """
        renderer = request.accepted_renderer
        if isinstance(renderer, BrowsableAPIRenderer):
            # A page for people: the session as GET shows it (its newest messages), not a download.
            return self.retrieve(request, *args, **kwargs)
        store, session_id, owner = self.store, self.session_id, self.owner
        # The first window is read before the response starts, so that a missing session is a 404.
        summary = store.get_session_summary(session_id, owner=owner)
        first = store.get_messages(session_id, owner=owner, after=0, limit=EXPORT_WINDOW)
        windows = _windows(store, session_id, owner, first)
        if renderer.format == "markdown":
            chunks: Iterator[bytes] = _markdown_chunks(summary, windows)
            extension, content_type = "md", f"{MarkdownRenderer.media_type}; charset=utf-8"
        else:
            chunks = transcript_json_chunks(
                session_json(summary), ([message_json(m) for m in window] for window in windows)
            )
            extension, content_type = "json", JSONRenderer.media_type  # UTF-8 by definition
        response = StreamingHttpResponse(chunks, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="conversation-{session_id}.{extension}"'
        return response


# ---------------------------------------------------------------------------------------------- helpers

_MESSAGE_ID = re.compile(r"[1-9][0-9]{0,12}")
_PLAIN_LIMIT = re.compile(r"[0-9]{1,3}")
_PLAIN_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,200}")
# The fields of a message body a JSON client may send, with the exact types the store takes.
_OPTIONAL_MESSAGE_FIELDS: dict[str, tuple[type, ...]] = {
    "sources": (list,),
    "status": (str,),
    "data": (dict, type(None)),
    "token_count": (int, type(None)),
}


def _plain_message(data: Any) -> bool:
    """Whether a JSON message body holds exactly the types the store takes, which the serializer would
    pass on unchanged: then the store alone validates it (it checks every limit anyway) and the
    serializer runs only if the store refuses it, to give its own errors first. Anything else (a form,
    ``"5"`` for a number, a null, text no UTF-8 can hold) goes through the serializer as before."""
    if type(data) is not dict:
        return False
    role, content = data.get("role"), data.get("content")
    if type(role) is not str or type(content) is not str:
        return False
    for name, types in _OPTIONAL_MESSAGE_FIELDS.items():
        if name in data and type(data[name]) not in types:
            return False
    try:
        content.encode("utf-8")  # lone surrogates: the serializer names them
    except UnicodeEncodeError:
        return False
    return True


def _windows(
    store: ConversationStore, session_id: str, owner: str, first: list[Message]
) -> Iterator[list[Message]]:
    """The session's messages window by window, from ``first``: at most ``EXPORT_WINDOW`` in memory."""
    window = first
    while window:
        yield window
        if len(window) < EXPORT_WINDOW:
            return
        try:
            window = store.get_messages(session_id, owner=owner, after=window[-1].id, limit=EXPORT_WINDOW)
        except SessionNotFound:
            # Deleted or expired while streaming: the document ends here (its status was sent already).
            logger.info("Session %s went away during its export", session_id)
            return


def _markdown_chunks(summary: Any, windows: Iterator[list[Message]]) -> Iterator[bytes]:
    yield markdown_header(session_json(summary)).encode("utf-8")
    for window in windows:
        yield "".join(markdown_message(message_json(m)) for m in window).encode("utf-8")


# The serializer of each (action, method); "" stands for any method. The browsable API and OPTIONS
# read these to draw forms; the schema reads the views' annotations.
_SERIALIZERS: Mapping[tuple[str | None, str], type[BaseSerializer[Any]]] = {
    ("messages", "post"): MessageCreateSerializer,
    ("messages", ""): MessagePageSerializer,
    ("message", "patch"): MessageUpdateSerializer,
    ("message", ""): MessageSerializer,
    ("extend", ""): MessageExtendSerializer,
    ("truncate", ""): TruncateSerializer,
    ("context", ""): MessageSerializer,
    ("create", ""): SessionWriteSerializer,
    ("partial_update", ""): SessionWriteSerializer,
    ("retrieve", ""): SessionDetailSerializer,
    ("export", ""): SessionDetailSerializer,
}

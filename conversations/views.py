"""The HTTP API: one ViewSet over the conversation store.

Data flows one way: the view resolves the owner, a serializer checks the input's shape, the store
validates the limits and talks to Redis. The store's errors know nothing of HTTP; ``handle_exception``
translates them here, at the boundary, so a host project needs no ``EXCEPTION_HANDLER`` of its own.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig, TooManyFieldsSent
from django.core.handlers.asgi import ASGIRequest
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from .conf import conf
from .exceptions import IdempotencyConflict, InvalidInput, SessionFull, SessionNotFound, StoreUnavailable
from .pagination import MessageCursor, page_link, read_message_page
from .renderers import MarkdownRenderer
from .schema import OpenApiParameter, OpenApiResponse, OpenApiTypes, extend_schema, extend_schema_view
from .serializers import (
    VALIDATION_ERROR_SCHEMA,
    ErrorSerializer,
    MessageCreateSerializer,
    MessagePageSerializer,
    MessageSerializer,
    PageQuerySerializer,
    SessionDetailSerializer,
    SessionPageQuerySerializer,
    SessionPageSerializer,
    SessionSerializer,
    SessionWriteSerializer,
)
from .store import ConversationStore, get_store
from .throttling import ConversationsRateThrottle

logger = logging.getLogger("conversations")

#: Seconds a client is asked to wait (``Retry-After``) when Redis cannot be reached.
RETRY_AFTER_SECONDS = 5

IDEMPOTENCY_HEADER = "Idempotency-Key"

# ---------------------------------------------------------------------------------------------- errors


class SessionNotFoundError(exceptions.APIException):
    # One body for missing, expired, another owner's and malformed ids: none may be told apart.
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = _("Session not found.")
    default_code = "session_not_found"


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
    elif isinstance(exc, InvalidInput):
        field = exc.field or api_settings.NON_FIELD_ERRORS_KEY
        field = IDEMPOTENCY_HEADER if field == "idempotency_key" else field
        translated = exceptions.ValidationError({field: [exc.message]})
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


def resolve_owner(request: Request) -> str | None:
    """The owner of ``request`` from ``CONVERSATIONS["OWNER_RESOLVER"]``, resolved once per request.

    Never taken from the body, the query string or a header: only the resolver (by default, the
    authenticated user, or the anonymous visitor's Django session) decides.
    """
    owner = request.__dict__.get("_conversations_owner", _UNRESOLVED)
    if owner is _UNRESOLVED:
        owner = import_string(conf.OWNER_RESOLVER)(request)
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
        return get_store()

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

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        # The browsable API and OPTIONS describe a form by asking with a copy of the request that carries
        # the form's method, so decide by that method (OPTIONS leaves ``action`` unset).
        method = str(getattr(self.request, "method", None) or "GET").lower()
        action = getattr(self, "action_map", {}).get(method) or self.action
        if action == "messages":
            return MessageCreateSerializer if method == "post" else MessagePageSerializer
        if action in ("create", "partial_update"):
            return SessionWriteSerializer
        if action in ("retrieve", "export"):
            return SessionDetailSerializer
        return SessionSerializer

    def get_throttles(self) -> list[BaseThrottle]:
        # The host's default throttles still apply; the ``conversations`` scope comes on top.
        return [*super().get_throttles(), ConversationsRateThrottle()]

    def get_renderers(self) -> list[BaseRenderer]:
        if self.action == "export":
            # DRF reserves ?format= for choosing a renderer: the export's formats are its renderers.
            renderers: list[BaseRenderer] = [JSONRenderer(), MarkdownRenderer()]
            renderers += [r for r in super().get_renderers() if isinstance(r, BrowsableAPIRenderer)]
            return renderers
        return super().get_renderers()

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

    def _query(self, serializer_class: type[PageQuerySerializer] = PageQuerySerializer) -> dict[str, Any]:
        # A plain dict, not the QueryDict: DRF reads a QueryDict like an HTML form, where an empty
        # value means "not given"; in a query string ``?limit=`` is simply not a number.
        return self._validated(serializer_class(data=self.request.query_params.dict()))

    def _validated(self, serializer: BaseSerializer[Any]) -> dict[str, Any]:
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(serializer.validated_data)
        return data

    # ------------------------------------------------------------------ sessions

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Your sessions, most recently active first, `limit` at a time (1 to 100, default 20)."""
        query = self._query(SessionPageQuerySerializer)
        page = self.store.list_sessions_page(
            owner=self.owner, limit=query["limit"], cursor=query.get("cursor")
        )
        data = {"next": page_link(request, page.next_cursor), "previous": None, "results": page.sessions}
        return Response(SessionPageSerializer(data).data)

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
        return Response(
            dict(SessionSerializer(session).data),
            status=status.HTTP_201_CREATED,
            headers={"Location": location},
        )

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """One of your sessions with all its messages, oldest first."""
        session = self.store.get_session(self.session_id, owner=self.owner)
        if session is None:
            raise SessionNotFound(self.session_id)
        return Response(SessionDetailSerializer(session).data)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Change the `title` and/or replace the `metadata` of a session (renews its expiry)."""
        body = self._validated(self.get_serializer(data=request.data, partial=True))
        summary = self.store.update_session(self.session_id, owner=self.owner, **body)
        return Response(SessionSerializer(summary).data)

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
        summary="Append a message",
        description="Append a message (`role`, `content`, optional `sources`) and return it as stored. "
        "With an `Idempotency-Key` header, a retried POST returns the first result (same status, same "
        "message id) instead of appending twice.",
        parameters=[SESSION_ID_PARAMETER, IDEMPOTENCY_PARAMETER, RETRY_AFTER_PARAMETER],
        request=json_body(MessageCreateSerializer),
        responses={201: MessageSerializer, **_errors(400, 404, 409, 411, 413, 415, 422)},
    )
    @action(detail=True, methods=["get", "post"], url_path="messages", url_name="messages")
    def messages(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The messages of a session, oldest first, a page at a time.

        Page with the limit (1 to 100, default 20) and cursor query parameters, or follow next and previous.
        POST a role, the content and optional sources to append a message.
        An Idempotency-Key header makes a retried POST return the first result instead of appending twice.
        """
        if request.method == "POST":
            return self._append_message(request)
        query = self._query()
        cursor = MessageCursor.decode(query["cursor"]) if "cursor" in query else None
        page = read_message_page(
            self.store, self.session_id, owner=self.owner, limit=query["limit"], cursor=cursor
        )
        data = {
            "next": page_link(request, page.next.encode() if page.next else None),
            "previous": page_link(request, page.previous.encode() if page.previous else None),
            "results": page.results,
        }
        return Response(MessagePageSerializer(data).data)

    def _append_message(self, request: Request) -> Response:
        body = self._validated(self.get_serializer(data=request.data))
        message = self.store.append_message(
            self.session_id,
            role=body["role"],
            content=body["content"],
            sources=body.get("sources"),
            owner=self.owner,
            idempotency_key=self.idempotency_key,
        )
        return Response(dict(MessageSerializer(message).data), status=status.HTTP_201_CREATED)

    # ------------------------------------------------------------------ export

    @extend_schema(
        tags=TAGS,
        summary="Download a transcript",
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
            (200, "application/json"): SessionDetailSerializer,
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
    def export(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The whole transcript of a session, as a download.

        ?format=json (the default) gives the session and its messages as JSON.
        ?format=markdown gives a document to read or archive.
        """
        response = self.retrieve(request, *args, **kwargs)  # the same session, in another renderer
        renderer = request.accepted_renderer
        if not isinstance(renderer, BrowsableAPIRenderer):
            extension = "md" if renderer.format == "markdown" else renderer.format
            response["Content-Disposition"] = (
                f'attachment; filename="conversation-{self.session_id}.{extension}"'
            )
        return response

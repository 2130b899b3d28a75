"""The chat page at ``/chat/``: plain Django views over the store, live through the events stream.

The page lists your sessions, shows the selected conversation and a composer. Writes go through these
views (a form POST each; the page's script sends them with ``fetch`` and stays put), and the page learns
of every change, including the scripted assistant's tokens, from ``/api/sessions/{id}/events/``. Renaming
and deleting a session use the API itself.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.module_loading import import_string
from django.views.decorators.http import require_GET, require_POST

from conversations.conf import conf
from conversations.exceptions import ConversationError, InvalidInput, SessionNotFound
from conversations.store import get_store

from . import assistant


def _owner(request: HttpRequest) -> str:
    owner = import_string(conf.OWNER_RESOLVER)(request)
    assert isinstance(owner, str), "login_required lets only signed-in users through"
    return owner


def _done(request: HttpRequest, session_id: str, status: int = 202, **extra: Any) -> HttpResponse:
    """A fetch from the page gets JSON; a plain form POST (no script) goes back to the page."""
    url = reverse("chat-session", args=[session_id])
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"session_id": session_id, "url": url, **extra}, status=status)
    return redirect(url)


def _refused(request: HttpRequest, session_id: str | None, exc: ConversationError) -> HttpResponse:
    if isinstance(exc, SessionNotFound):
        raise Http404("No such conversation.") from exc
    message = getattr(exc, "message", str(exc))
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"detail": message}, status=400)
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


@login_required
@require_GET
def chat(request: HttpRequest, session_id: str | None = None) -> HttpResponse:
    store = get_store()
    owner = _owner(request)
    sessions = store.list_sessions_page(owner=owner, limit=50).sessions
    selected = None
    if session_id is not None:
        try:
            selected = store.get_session_head(session_id, owner=owner, last=50)
        except SessionNotFound as exc:
            raise Http404("No such conversation.") from exc
    return render(
        request,
        "demo/chat.html",
        {"sessions": sessions, "selected": selected, "assistant_label": assistant.LABEL},
    )


@login_required
@require_POST
def new_session(request: HttpRequest) -> HttpResponse:
    """Start a conversation; with a first message (``content``), the assistant answers it."""
    store = get_store()
    owner = _owner(request)
    content = request.POST.get("content", "").strip()
    title = (content[:60] + ("…" if len(content) > 60 else "")) if content else "New conversation"
    session = store.create_session(owner=owner, title=title)
    if content:
        store.append_message(session.id, role="user", content=content, owner=owner)
        assistant.answer_in_background(session.id, owner, content)
    return _done(request, session.id, status=201)


@login_required
@require_POST
def send(request: HttpRequest, session_id: str) -> HttpResponse:
    store = get_store()
    owner = _owner(request)
    content = request.POST.get("content", "")
    if not content.strip():
        return _refused(request, session_id, InvalidInput("Write a message first.", field="content"))
    try:
        message = store.append_message(session_id, role="user", content=content, owner=owner)
    except ConversationError as exc:
        return _refused(request, session_id, exc)
    assistant.answer_in_background(session_id, owner, content, attempt=0)
    return _done(request, session_id, message_id=message.id)


@login_required
@require_POST
def regenerate(request: HttpRequest, session_id: str) -> HttpResponse:
    """Answer the last user message again: its replies go (truncate), a new one is written."""
    store = get_store()
    owner = _owner(request)
    try:
        messages = store.get_messages(session_id, owner=owner, last=50)
    except ConversationError as exc:
        return _refused(request, session_id, exc)
    prompts = [m for m in messages if m.role == "user"]
    if not prompts:
        return _refused(request, session_id, InvalidInput("There is nothing to answer yet.", field="content"))
    prompt = prompts[-1]
    attempt = sum(1 for m in messages if m.id > prompt.id) + messages[-1].id  # a different reply each time
    store.truncate_messages(session_id, after=prompt.id, owner=owner)
    assistant.answer_in_background(session_id, owner, prompt.content, attempt=attempt)
    return _done(request, session_id)


@login_required
@require_POST
def edit(request: HttpRequest, session_id: str, message_id: int) -> HttpResponse:
    """Change a user message and resubmit it: what came after it goes, and the assistant answers anew."""
    store = get_store()
    owner = _owner(request)
    content = request.POST.get("content", "")
    if not content.strip():
        return _refused(request, session_id, InvalidInput("A message cannot be empty.", field="content"))
    try:
        store.truncate_messages(session_id, after=message_id, owner=owner)
        message = store.update_message(session_id, message_id, owner=owner, content=content)
    except ConversationError as exc:
        return _refused(request, session_id, exc)
    if message.role == "user":
        assistant.answer_in_background(session_id, owner, content, attempt=message.id)
    return _done(request, session_id, message_id=message.id)


@login_required
@require_POST
def delete_message(request: HttpRequest, session_id: str, message_id: int) -> HttpResponse:
    store = get_store()
    try:
        store.delete_message(session_id, message_id, owner=_owner(request))
    except ConversationError as exc:
        return _refused(request, session_id, exc)
    return _done(request, session_id)

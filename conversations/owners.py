"""Who owns the sessions of a request. ``CONVERSATIONS["OWNER_RESOLVER"]`` names the callable in use."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from .conf import conf


def default_owner(request: HttpRequest | Any) -> str | None:
    """``"user:<pk>"`` for an authenticated user; ``"anon:<session key>"`` for an anonymous visitor when
    ``ALLOW_ANONYMOUS`` is on (a Django session is started for them); otherwise None (no owner)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    if not conf.ALLOW_ANONYMOUS:
        return None
    session = getattr(request, "session", None)
    if session is None:
        return None
    if session.session_key is None:
        session.save()
    return f"anon:{session.session_key}"

"""Rate limiting of the conversation endpoints: the DRF throttle scope ``conversations``.

Set a rate in the host project to turn it on::

    REST_FRAMEWORK = {"DEFAULT_THROTTLE_RATES": {"conversations": "120/min"}}

Without that entry nothing is limited (DRF's own scoped throttles would fail with ImproperlyConfigured).
Requests are counted per authenticated user, and per client IP address otherwise.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from .exceptions import StoreUnavailable


class ConversationsRateThrottle(UserRateThrottle):
    scope = "conversations"

    def get_rate(self) -> str | None:
        # Read at call time (DRF's base class binds the rates when the module is imported), and no
        # rate means no limit.
        rates: dict[str, Any] = api_settings.DEFAULT_THROTTLE_RATES or {}
        rate = rates.get(self.scope)
        return None if rate is None else str(rate)

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:  # with no rate, DRF's allow_request answers True without touching the cache
            return super().allow_request(request, view)
        except Exception as exc:
            # The counters live in Django's default cache, which on most sites is this same Redis. Any
            # cache backend's failure means "cannot decide now": a 503, never a 500.
            raise StoreUnavailable(f"The throttle's cache is unavailable: {exc}") from exc

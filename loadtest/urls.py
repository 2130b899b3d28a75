"""The load test's URLs: the example project's, and the bench's bare view to compare the app with."""

from __future__ import annotations

from typing import Any

from demo.urls import urlpatterns as demo_urlpatterns
from django.urls import URLPattern, URLResolver, path
from rest_framework.response import Response

from benchmarks.urls import BareView
from conversations.store import get_redis_client


class ServedBareView(BareView):
    """The bare view on the store's own Redis client (looked up once per process), reading one key."""

    key = "loadtest:bare"

    def _answer(self, status: int) -> Response:
        if type(self).client is None:
            type(self).client = get_redis_client()
        return super()._answer(status)

    def get(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        return self._answer(200)


urlpatterns: list[URLPattern | URLResolver] = [*demo_urlpatterns, path("bare/", ServedBareView.as_view())]

"""The bench site: the app's API as a host project mounts it, and a bare DRF view to compare it with."""

from __future__ import annotations

from typing import Any, ClassVar

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.views import HasConversationOwner


class BareView(APIView):
    """The reference: the app's authentication (DRF's defaults) and permission classes, one redis-py
    ``GET`` on the store's own client, and a small JSON answer. What the app adds over it is its own
    work: parsing and validating, the store's script, serializing.

    ``client`` and ``key`` are set by whoever serves it (``benchmarks.http_bench``, the load test);
    unset, the view answers without touching Redis.
    """

    permission_classes = [HasConversationOwner]
    client: ClassVar[Any] = None
    key: ClassVar[str] = ""

    def _answer(self, status: int) -> Response:
        value = self.client.get(self.key) if self.client is not None else None
        return Response({"ok": True, "value": None if value is None else len(value)}, status=status)

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._answer(200)

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._answer(201)


urlpatterns: list[URLPattern | URLResolver] = [
    path("api/", include("conversations.urls")),
    path("bare/", BareView.as_view()),
]

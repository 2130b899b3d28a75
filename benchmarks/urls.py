"""The bench site: the app's API as a host project mounts it, and a bare DRF view to compare it with."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, URLResolver, include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.views import HasConversationOwner


class BareView(APIView):
    """A constant answer behind the app's authentication (DRF's defaults) and permission classes."""

    permission_classes = [HasConversationOwner]

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"ok": True})

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"ok": True}, status=201)


urlpatterns: list[URLPattern | URLResolver] = [
    path("api/", include("conversations.urls")),
    path("bare/", BareView.as_view()),
]

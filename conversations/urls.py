"""URLs of the HTTP API. In the host project: ``path("api/", include("conversations.urls"))``."""

from __future__ import annotations

from typing import Any

from django.urls import path
from rest_framework.routers import DynamicRoute, Route, SimpleRouter

from .events import SessionEventsView
from .views import SessionViewSet

app_name = "conversations"


class SlashedIdRouter(SimpleRouter):
    """The detail routes again, for ids holding a slash, after the real ones.

    The server decodes ``%2F`` in a path to ``/`` before Django sees it, so such an id matches none of
    the router's patterns and would get Django's HTML 404 page. Routed to the same views instead, it
    gets the same JSON 404 as any other malformed id. Its operations are left out of the schema.
    """

    routes = [  # the actions first: ``.+`` would otherwise swallow "<id>/messages" as an id
        *(route for route in SimpleRouter.routes if isinstance(route, DynamicRoute) and route.detail),
        *(route for route in SimpleRouter.routes if isinstance(route, Route) and route.detail),
    ]

    def get_lookup_regex(self, viewset: Any, lookup_prefix: str = "") -> str:
        return "(?P<id>.+)"

    def get_routes(self, viewset: Any) -> list[Route]:
        return [
            route._replace(initkwargs={**route.initkwargs, "schema": None})
            for route in super().get_routes(viewset)
        ]


router = SimpleRouter()
router.register("sessions", SessionViewSet, basename="session")

slashed_ids = SlashedIdRouter()
slashed_ids.register("sessions", SessionViewSet, basename="session-slashed-id")

urlpatterns = [
    path("sessions/<str:id>/events/", SessionEventsView.as_view(), name="session-events"),
    *router.urls,
    *slashed_ids.urls,
]

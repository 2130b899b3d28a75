"""URLs of the HTTP API. In the host project: ``path("api/", include("conversations.urls"))``."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .views import SessionViewSet

app_name = "conversations"

router = SimpleRouter()
router.register("sessions", SessionViewSet, basename="session")

urlpatterns = router.urls

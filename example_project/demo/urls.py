from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("health/", views.health, name="health"),
    # An async view on the store's async twins (served by an ASGI server: demo/asgi.py).
    path("demo/async/sessions/<str:session_id>/last/", views.last_messages, name="async-last-messages"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    # The app's API, mounted the way the README tells a project to.
    path("api/", include("conversations.urls")),
    # Its OpenAPI 3 schema and interactive docs (assets served by drf-spectacular-sidecar, no CDN).
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

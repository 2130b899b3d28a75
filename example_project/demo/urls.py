from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from . import chat, views

urlpatterns = [
    path("", views.home, name="home"),
    path("health/", views.health, name="health"),
    # An async view on the store's async twins (served by an ASGI server: demo/asgi.py).
    path("demo/async/sessions/<str:session_id>/last/", views.last_messages, name="async-last-messages"),
    # The chat page (demo/chat.py): a scripted assistant whose replies stream in through the events API.
    path("chat/", chat.chat, name="chat"),
    path("chat/new/", chat.new_session, name="chat-new"),
    path("chat/<str:session_id>/", chat.chat, name="chat-session"),
    path("chat/<str:session_id>/send/", chat.send, name="chat-send"),
    path("chat/<str:session_id>/regenerate/", chat.regenerate, name="chat-regenerate"),
    path("chat/<str:session_id>/messages/<int:message_id>/edit/", chat.edit, name="chat-edit"),
    path("chat/<str:session_id>/messages/<int:message_id>/delete/", chat.delete_message, name="chat-delete"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    # The app's API, mounted the way the README tells a project to.
    path("api/", include("conversations.urls")),
    # Its OpenAPI 3 schema and interactive docs (assets served by drf-spectacular-sidecar, no CDN).
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

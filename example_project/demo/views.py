from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from conversations.store import get_redis_client


def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "demo/home.html",
        {"using_fakeredis": settings.USING_FAKEREDIS, "demo_username": settings.DEMO_USERNAME},
    )


def health(request: HttpRequest) -> JsonResponse:
    """200 when Redis answers a PING, 503 otherwise."""
    try:
        get_redis_client().ping()
    except Exception as exc:  # any failure to reach Redis is "unhealthy", never a 500
        return JsonResponse({"redis": "unavailable", "detail": str(exc)}, status=503)
    return JsonResponse({"redis": "ok", "fakeredis": settings.USING_FAKEREDIS})

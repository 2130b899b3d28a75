from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from conversations.operations.memory import memory_states
from conversations.store import get_redis_client


def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "demo/home.html",
        {"using_fakeredis": settings.USING_FAKEREDIS, "demo_username": settings.DEMO_USERNAME},
    )


def health(request: HttpRequest) -> JsonResponse:
    """503 when Redis does not answer a PING; otherwise 200, with ``"status": "ok"`` or, while Redis is
    full and refuses writes, ``"degraded"``: reads, listings, exports and deletes still work then (and
    deleting frees room), so a load balancer must keep this server in rotation, and an alert should fire.
    """
    client = get_redis_client()
    try:
        client.ping()
    except Exception as exc:  # any failure to reach Redis is "unhealthy", never a 500
        return JsonResponse({"status": "unavailable", "redis": "unavailable", "detail": str(exc)}, status=503)
    body: dict[str, object] = {"status": "ok", "redis": "ok", "fakeredis": settings.USING_FAKEREDIS}
    states = memory_states(client)
    if states:
        body["memory"] = [
            {"used_bytes": s.used_bytes, "max_bytes": s.max_bytes, "policy": s.policy} for s in states
        ]
        if any(state.writes_refused for state in states):
            body["status"] = "degraded"
            body["detail"] = (
                "Redis is at maxmemory and refuses writes: new sessions and messages get 503; reads, "
                "listings, exports and deletes work, and deleting sessions frees room."
            )
    return JsonResponse(body)

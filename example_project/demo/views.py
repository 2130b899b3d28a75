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


async def last_messages(request: HttpRequest, session_id: str) -> JsonResponse:
    """``GET /demo/async/sessions/<id>/last/?n=20``: the session's newest messages, read with the store's
    async twin on the event loop (no thread). Owner from the signed-in user, as the API's; 404 for a
    session that is missing or someone else's, 503 when Redis cannot answer."""
    from conversations.exceptions import InvalidInput, SessionNotFound, StoreUnavailable
    from conversations.store import get_store

    user = await request.auser()  # request.user would query the database synchronously
    if not user.is_authenticated:
        return JsonResponse({"detail": "Sign in first."}, status=403)
    raw = request.GET.get("n", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        return JsonResponse({"n": ["A whole number from 1 to 200."]}, status=400)
    try:
        messages = await get_store().aget_messages(session_id, owner=f"user:{user.pk}", last=int(raw))
    except (SessionNotFound, InvalidInput):
        return JsonResponse({"detail": "Not found."}, status=404)
    except StoreUnavailable:
        return JsonResponse({"detail": "The conversation store is unavailable; retry shortly."}, status=503)
    return JsonResponse(
        {
            "session_id": session_id,
            "messages": [
                {
                    "id": m.id,
                    "role": m.role,
                    "content": m.content,
                    "status": m.status,
                    "created_at": m.created_at.isoformat(timespec="milliseconds"),
                }
                for m in messages
            ],
        }
    )


def fakeredis_async_client(alias: str) -> object:
    """The demo's ASYNC_CLIENT_FACTORY without REDIS_URL: an async fakeredis on the same in-process server
    as the sync one (same host and port), so the async view sees what the API wrote."""
    import fakeredis

    return fakeredis.FakeAsyncRedis(host="fakeredis-demo", port=6379)

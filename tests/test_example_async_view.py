"""The example site's async view (``demo.views.last_messages``, on the store's ``aget_messages``) served
by a real ASGI server: uvicorn in a subprocess, on a free port, against ``demo.asgi:application`` and the
real Redis (a key prefix of its own), with the demo user signed in through the login form."""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import IN_CI, delete_prefix
from tests.example_site import example_env, prepare, serve, uvicorn_command

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BASIC = "Basic " + base64.b64encode(b"demo:demo-password").decode()


@pytest.fixture
def asgi_server(tmp_path: Path, redis_url: str) -> Iterator[str]:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        message = "uvicorn is not installed (it is in the [test] extra)"
        if IN_CI:
            pytest.fail(message + " (CI=true: never skipped)", pytrace=False)
        pytest.skip(message)
    prefix = f"ct-asgi-{uuid.uuid4().hex[:8]}"
    env = example_env(tmp_path, REDIS_URL=redis_url, CONVERSATIONS_KEY_PREFIX=prefix)
    prepare(env)
    try:
        with serve(uvicorn_command, env, tmp_path / "uvicorn.log") as (base, _proc):
            yield base
    finally:
        client = redis.Redis.from_url(redis_url, socket_timeout=10)
        delete_prefix(client, prefix)
        client.close()


def _api(base: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": BASIC, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _signed_in(base: str) -> urllib.request.OpenerDirector:
    """An opener holding the demo user's Django session, signed in through the login form."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(base + "/api-auth/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None
    data = urllib.parse.urlencode(
        {"username": "demo", "password": "demo-password", "csrfmiddlewaretoken": token.group(1), "next": "/"}
    ).encode()
    opener.open(
        urllib.request.Request(base + "/api-auth/login/", data=data, headers={"Referer": base}), timeout=10
    )
    assert any(cookie.name == "sessionid" for cookie in jar)
    return opener


def _get(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, Any]:
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_async_view_serves_the_newest_messages_under_uvicorn(asgi_server: str) -> None:
    base = asgi_server
    session = _api(base, "POST", "/api/sessions/", {"title": "async"})
    for i in range(5):
        _api(base, "POST", f"/api/sessions/{session['id']}/messages/", {"role": "user", "content": f"m{i}"})
    opener = _signed_in(base)
    url = f"{base}/demo/async/sessions/{session['id']}/last/"

    status, body = _get(opener, url + "?n=3")
    assert status == 200
    assert body["session_id"] == session["id"]
    assert [(m["id"], m["content"], m["role"]) for m in body["messages"]] == [
        (3, "m2", "user"),
        (4, "m3", "user"),
        (5, "m4", "user"),
    ]
    # Many requests at once, all answered from the server loop's own pool, each with its own reply.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: _get(opener, f"{url}?n={n}"), [1 + i % 5 for i in range(40)]))
    for i, (status, body) in enumerate(answers):
        assert status == 200
        assert [m["content"] for m in body["messages"]] == [f"m{k}" for k in range(5 - (1 + i % 5), 5)]

    assert _get(opener, url + "?n=0")[0] == 400
    assert _get(opener, url + "?n=lots")[0] == 400
    assert _get(opener, f"{base}/demo/async/sessions/{'A' * 22}/last/")[0] == 404
    assert _get(opener, f"{base}/demo/async/sessions/not-an-id/last/")[0] == 404
    anonymous = urllib.request.build_opener()
    assert _get(anonymous, url) == (403, {"detail": "Sign in first."})

"""The example project serves the API, its schema and its docs where the README and home page say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "example_project" / "manage.py"

# Runs inside the example project (its own settings, on fakeredis): the demo user creates a session with
# HTTP Basic, then one request to each URL through Django's test client. Prints what it sees, as JSON.
SCRIPT = """
import base64, io, json
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client

call_command("migrate", verbosity=0, interactive=False)
call_command("ensure_demo_user", stdout=io.StringIO())
basic = "Basic " + base64.b64encode(b"demo:demo-password").decode()
created = Client(HTTP_AUTHORIZATION=basic).post(
    "/api/sessions/", json.dumps({"title": "demo"}), content_type="application/json"
)
session_id = created.json()["id"]
# The rest as a signed-in browser would (HTTP Basic hashes the password on every request: slow).
from django.contrib.auth import get_user_model
client = Client()
client.force_login(get_user_model().objects.get(username="demo"))
client.post(f"/api/sessions/{session_id}/messages/", json.dumps({"role": "user", "content": "hi"}),
            content_type="application/json")
seen = {"created": created.status_code}
pages = ["/", "/api/sessions/", f"/api/sessions/{session_id}/messages/", "/api/schema/", "/api/docs/",
         "/api/redoc/", f"/api/sessions/{session_id}/export/?format=markdown"]
for url in pages:
    response = client.get(url)
    # The export streams its body.
    body = b"".join(response.streaming_content) if response.streaming else response.content
    seen[url.replace(session_id, "ID")] = [response.status_code, response["Content-Type"],
                                           body.decode()[:200000]]
seen["anonymous"] = Client().get("/api/sessions/").status_code
seen["swagger_asset"] = bool(finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"))
print("RESULT " + json.dumps(seen))
"""


def test_the_example_project_serves_the_api_schema_and_docs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["DEMO_DATABASE"] = str(tmp_path / "demo.sqlite3")

    result = subprocess.run(
        [sys.executable, str(MANAGE), "shell", "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert seen["created"] == 201
    status, _, body = seen["/api/sessions/"]
    assert status == 200
    assert json.loads(body)["results"][0]["title"] == "demo"
    status, _, body = seen["/api/sessions/ID/messages/"]
    assert [m["content"] for m in json.loads(body)["results"]] == ["hi"]
    status, content_type, body = seen["/api/sessions/ID/export/?format=markdown"]
    assert (status, content_type) == (200, "text/markdown; charset=utf-8")
    assert "> hi" in body
    status, content_type, body = seen["/api/schema/"]
    assert status == 200
    assert content_type.startswith("application/vnd.oai.openapi")
    assert "/api/sessions/{id}/messages/:" in body
    status, _, body = seen["/api/docs/"]
    assert status == 200
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in body  # from the sidecar, not a CDN
    assert "cdn" not in body.lower()
    status, _, body = seen["/api/redoc/"]
    assert status == 200
    assert "/static/drf_spectacular_sidecar/redoc/" in body
    assert seen["swagger_asset"]
    status, _, body = seen["/"]
    for link in ("/api/sessions/", "/api/docs/", "/api/redoc/", "/api/schema/"):
        assert f'href="{link}"' in body
    assert seen["anonymous"] in (401, 403)

"""HTTP benchmarks: the app's DRF views beside a bare DRF view, through Django's test client.

Both go through the same client, middleware, authentication (HTTP Basic; the bench settings hash
passwords with MD5, as Django's default PBKDF2 would dwarf everything else) and permission class, so
the ratio is what the app's own work adds: parsing and validating, the store, serializing.
"""

from __future__ import annotations

import base64
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from .report import HTTP_BAR, Report, Row, us, x
from .timing import Op, Timing, interleaved

if TYPE_CHECKING:
    from .store_bench import Bench


def http_timings(bench: Bench) -> dict[str, Timing]:
    sizes = bench.sizes
    username, password = f"bench-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    user = get_user_model().objects.create_user(username, password=password)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    try:
        with override_settings(ROOT_URLCONF="benchmarks.urls"):
            client = Client(HTTP_AUTHORIZATION=f"Basic {token}")
            created = client.post("/api/sessions/", {"title": "bench"}, content_type="application/json")
            assert created.status_code == 201, created.content
            url = f"/api/sessions/{created.json()['id']}/messages/"
            body = orjson.dumps({"role": "user", "content": bench.text()})
            for _ in range(sizes.http_fill):
                sent = client.post(url, body, content_type="application/json")
                assert sent.status_code == 201, sent.content
            page = client.get(url, {"limit": 20})
            assert page.status_code == 200, page.content
            assert len(page.json()["results"]) == 20, page.content

            def post(path: str) -> Any:
                return lambda: client.post(path, body, content_type="application/json")

            def get(path: str, query: dict[str, Any] | None = None) -> Any:
                return lambda: client.get(path, query)

            writes = interleaved(
                {"append": Op(post(url)), "bare POST": Op(post("/bare/"))},
                post("/bare/"),
                reps=sizes.http_reps,
                rounds=sizes.http_rounds,
            )
            reads = interleaved(
                {"page": Op(get(url, {"limit": 20})), "bare GET": Op(get("/bare/"))},
                get("/bare/"),
                reps=sizes.http_reps,
                rounds=sizes.http_rounds,
            )
    finally:
        user.delete()
    return {**writes, **reads}


def add_rows(bench: Bench, report: Report) -> None:
    t = http_timings(bench)
    for method, name, label, bar in (
        ("POST", "append", "HTTP: POST a message (append)", HTTP_BAR),
        ("GET", "page", "HTTP: GET a page of 20 messages", None),
    ):
        report.add(Row(f"HTTP: bare DRF APIView, {method} (the reference)", us(t[f"bare {method}"].op_us)))
        ratio = t[name].ratio
        report.add(
            Row(
                label,
                us(t[name].op_us),
                x(ratio, "bare"),
                bar="" if bar is None else f"≤ {bar:g} x bare",
                holds=None if bar is None else ratio <= bar,
            )
        )

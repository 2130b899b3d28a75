"""HTTP benchmarks: the app's DRF views beside a bare DRF view, through Django's test client.

Both go through the same client, middleware, authentication (HTTP Basic; the bench settings hash
passwords with MD5, as Django's default PBKDF2 would dwarf everything else) and permission class, and
the bare view does one redis-py ``GET`` on the store's client (``benchmarks.urls.BareView``), so the
ratio is what the app's own work adds: parsing and validating, the store's script, serializing. Each
pair (an app endpoint and the bare view with the same method) is timed interleaved, call by call.

    python -m benchmarks.http_bench        # the HTTP rows only (``benchmarks/run.py`` runs them all)
"""

from __future__ import annotations

import base64
import sys
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from .report import Report, Row, us, x
from .timing import Op, Timing, interleaved

if TYPE_CHECKING:
    from .store_bench import Bench

# Issue 14's bars for the HTTP path: each endpoint over the bare view with the same method.
HTTP_BARS = {"append": 1.35, "page": 1.35, "list": 1.35}

#: Sessions the bench user owns beside the one it appends to (a full first page of the listing).
LISTED_SESSIONS = 20


def http_timings(bench: Bench) -> dict[str, Timing]:
    from benchmarks.urls import BareView

    sizes = bench.sizes
    username, password = f"bench-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    user = get_user_model().objects.create_user(username, password=password)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    ref_key = f"{bench.prefix}:ref"
    bench.client.set(ref_key, b"v")
    BareView.client, BareView.key = bench.client, ref_key
    try:
        with override_settings(ROOT_URLCONF="benchmarks.urls"):
            client = Client(HTTP_AUTHORIZATION=f"Basic {token}")
            for i in range(LISTED_SESSIONS):
                listed = client.post(
                    "/api/sessions/", {"title": f"listed {i}"}, content_type="application/json"
                )
                assert listed.status_code == 201, listed.content
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
            listing = client.get("/api/sessions/")
            assert listing.status_code == 200, listing.content
            assert len(listing.json()["results"]) == 20, listing.content

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
                {
                    "page": Op(get(url, {"limit": 20})),
                    "list": Op(get("/api/sessions/")),
                    "bare GET": Op(get("/bare/")),
                },
                get("/bare/"),
                reps=sizes.http_reps,
                rounds=sizes.http_rounds,
            )
    finally:
        BareView.client, BareView.key = None, ""
        user.delete()
    return {**writes, **reads}


def add_rows(bench: Bench, report: Report) -> None:
    t = http_timings(bench)
    rows = (
        ("POST", "append", "HTTP: POST a message (append)"),
        ("GET", "page", "HTTP: GET a page of 20 messages"),
        ("GET", "list", f"HTTP: GET a page of {LISTED_SESSIONS} sessions (the list)"),
    )
    referenced: set[str] = set()
    for method, name, label in rows:
        if method not in referenced:
            referenced.add(method)
            report.add(
                Row(
                    f"HTTP: bare DRF APIView doing one redis-py GET, {method} (the reference)",
                    us(t[f"bare {method}"].op_us),
                )
            )
        ratio, bar = t[name].ratio, HTTP_BARS[name]
        report.add(
            Row(label, us(t[name].op_us), x(ratio, "bare"), bar=f"≤ {bar:g} x bare", holds=ratio <= bar)
        )


def main(argv: list[str] | None = None) -> int:
    """Run the HTTP rows alone (same sizes, settings and report as ``benchmarks/run.py``)."""
    from benchmarks import run

    smoke = "--smoke" in (argv if argv is not None else sys.argv[1:])
    run.setup_django()
    from django.core.management import call_command

    from benchmarks import store_bench as sb
    from conversations.conf import conf
    from conversations.store import get_redis_client, get_store

    call_command("migrate", verbosity=0, interactive=False)
    sizes = sb.Sizes.smoke() if smoke else sb.Sizes()
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    report = Report(prefix=prefix)
    with run.bench_settings(prefix, conf.CACHE_ALIAS):
        redis_client = get_redis_client()
        ref_key = f"{prefix}:ref"
        bench = sb.Bench(
            client=redis_client,
            store=get_store(),
            seed=None,  # type: ignore[arg-type]  # (the HTTP rows never use the seed)
            prefix=prefix,
            sizes=sizes,
            ref=lambda: redis_client.get(ref_key),
        )
        try:
            add_rows(bench, report)
        finally:
            run.delete_prefix(redis_client, prefix)
    print(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The product tried from outside: the example project under gunicorn on a real Redis, filled to
``maxmemory``, hit by parallel clients of one user; the throttle across worker processes; the report's
and the system checks' warnings about eviction and retried writes.

The gunicorn tests start the example project the way ``make loadtest`` does (``loadtest/run.py``), with
its shipped configuration: the throttle on, its counters in the same Redis as the sessions.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from django.core.management import call_command
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from rest_framework.test import APIClient

from conversations.checks import check_write_retries
from conversations.throttling import ConversationsRateThrottle
from loadtest.run import prepare_database, sign_in, start_gunicorn
from tests.conftest import delete_prefix
from tests.redis_server import PrivateRedis, free_port

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
SESSIONS = "/api/sessions/"


# --------------------------------------------------------------------------------------------- harness


@dataclass
class Site:
    """The example project under gunicorn, signed in as the demo user."""

    port: int
    headers: dict[str, str]
    access_log: Path

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = {**self.headers, **(headers or {})}
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                sent.setdefault("Content-Type", "application/json")
            if sent.pop("Transfer-Encoding", None) == "chunked" and data is not None:
                # An iterable body without a Content-Length: http.client sends it chunked.
                conn.request(method, path, body=iter([data[:5], data[5:]]), headers=sent, encode_chunked=True)
            else:
                conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, raw = self.request(method, path, body)
        return status, json.loads(raw) if raw else None

    def worker_pids(self) -> Counter[str]:
        """The gunicorn worker that answered each request so far (from the access log)."""
        return Counter(line.split("|")[0] for line in self.access_log.read_text().splitlines() if "|" in line)


def run_site(tmp_path: Path, redis_url: str, prefix: str, *, workers: int, rate: str) -> Iterator[Site]:
    access_log = tmp_path / "access.log"
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": redis_url,
            "CONVERSATIONS_KEY_PREFIX": prefix,
            "DEMO_DATABASE": str(tmp_path / "demo.sqlite3"),
            "DEMO_THROTTLE_RATE": rate,
            "DJANGO_DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "demo.settings",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(EXAMPLE), env.get("PYTHONPATH")])),
            "GUNICORN_CMD_ARGS": f"--access-logfile {access_log} --access-logformat %(p)s|%(s)s",
        }
    )
    prepare_database(env)
    port = free_port()
    server = start_gunicorn(env, port, SimpleNamespace(workers=workers, threads=4), tmp_path / "gunicorn.log")
    try:
        yield Site(port, sign_in(port, "demo", "demo-password"), access_log)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:  # pragma: no cover - a wedged server
            server.kill()
            server.wait(10)


@pytest.fixture
def shared_site(tmp_path: Path, redis_url: str) -> Iterator[Site]:
    """Four workers on the shared Redis under a prefix of this test's, throttled at 120/min."""
    prefix = f"ct-{uuid.uuid4().hex[:12]}"
    try:
        yield from run_site(tmp_path, redis_url, prefix, workers=4, rate="120/min")
    finally:
        client = redis.Redis.from_url(redis_url, socket_timeout=10)
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture
def full_redis_site(tmp_path: Path, private_redis: PrivateRedis) -> Iterator[Site]:
    """Two workers on a private Redis (noeviction), with the example project's own rate (600/min)."""
    private_redis.admin().config_set("maxmemory-policy", "noeviction")
    yield from run_site(tmp_path, private_redis.url, "demo", workers=2, rate="600/min")


def fill_to_maxmemory(server: PrivateRedis) -> None:
    """Lower ``maxmemory`` to 1 MB above what is used, write junk until Redis refuses a write, then set
    ``maxmemory`` a little below what is used: Redis stays full however its own buffers shrink
    meanwhile (a refused write's input buffer, freed later, would otherwise make room for small ones)."""
    admin = server.admin()
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 1_000_000)
    with pytest.raises(redis.ResponseError, match="maxmemory"):  # noqa: PT012 - the refusal ends the loop
        for i in range(10_000):
            admin.set(f"junk:{i}", b"j" * 20_000)
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 200_000)
    with pytest.raises(redis.ResponseError, match="maxmemory"):
        admin.set("junk:small", b"j")


# --------------------------------------------------------------------------------------------- throttle


def test_the_throttle_admits_exactly_its_limit_from_8_clients_across_4_gunicorn_workers(
    shared_site: Site,
) -> None:
    statuses: Counter[int] = Counter()
    waits: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", shared_site.port, timeout=30)
        for _ in range(40):
            conn.request("GET", SESSIONS, headers=shared_site.headers)
            response = conn.getresponse()
            response.read()
            with lock:
                statuses[response.status] += 1
                if response.status == 429:
                    waits.append(int(response.getheader("Retry-After") or 0))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    # 320 requests of one user in a few seconds, at 120 a minute: exactly 120 get through. (DRF's own
    # SimpleRateThrottle let ~70% more through here: its history is read, appended and written back
    # by each worker apart.)
    assert statuses == {200: 120, 429: 200}
    assert all(0 < wait <= 60 for wait in waits)
    served_by = shared_site.worker_pids()
    assert len(served_by) >= 2, f"every request went to one worker: {served_by}"


def _throttle_worker(barrier: Any, results: Any, attempts: int) -> None:
    request: Any = SimpleNamespace(user=SimpleNamespace(is_authenticated=True, pk=7))
    barrier.wait(30)
    admitted = sum(ConversationsRateThrottle().allow_request(request, None) for _ in range(attempts))  # type: ignore[arg-type]
    results.put(admitted)


@pytest.mark.django_db
def test_the_throttle_admits_exactly_its_limit_from_8_processes(settings: Any, key_prefix: str) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"conversations": "250/min"},
    }
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(8), context.Queue()
    processes = [context.Process(target=_throttle_worker, args=(barrier, results, 60)) for _ in range(8)]
    for process in processes:
        process.start()
    admitted = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)

    assert sum(admitted) == 250  # of 480 attempts made at once
    assert all(process.exitcode == 0 for process in processes)


# --------------------------------------------------------------------------------------------- full Redis


def test_a_full_redis_keeps_reads_listings_exports_and_deletes_working_with_the_throttle_on(
    full_redis_site: Site, private_redis: PrivateRedis
) -> None:
    site = full_redis_site
    status, health = site.json("GET", "/health/")
    assert (status, health["status"]) == (200, "ok")
    status, _, raw = site.request("POST", SESSIONS, {"title": "keep"}, {"Transfer-Encoding": "chunked"})
    assert status == 201, raw  # a chunked body reaches the view whole under gunicorn
    first = json.loads(raw)
    assert first["title"] == "keep"
    status, headers, raw = site.request("GET", f"{SESSIONS}abc%2Fdef/")
    assert (status, headers["Content-Type"], json.loads(raw)) == (
        404,
        "application/json",
        {"detail": "Session not found."},
    )
    status, second = site.json("POST", SESSIONS, {"title": "drop"})
    assert status == 201
    for session in (first, second):
        assert (
            site.json("POST", f"{SESSIONS}{session['id']}/messages/", {"role": "user", "content": "hi"})[0]
            == 201
        )

    fill_to_maxmemory(private_redis)

    status, listing = site.json("GET", SESSIONS)
    assert status == 200
    assert {s["title"] for s in listing["results"]} == {"keep", "drop"}
    detail = f"{SESSIONS}{first['id']}/"
    status, one = site.json("GET", detail)
    assert (status, [m["content"] for m in one["messages"]]) == (200, ["hi"])
    assert site.json("GET", detail + "messages/")[0] == 200
    status, headers, body = site.request("GET", detail + "export/?format=markdown")
    assert (status, headers["Content-Type"]) == (200, "text/markdown; charset=utf-8")
    assert "> hi" in body.decode()
    assert site.request("GET", detail + "export/?format=json")[0] == 200
    status, headers, _ = site.request("POST", detail + "messages/", {"role": "user", "content": "more"})
    assert (status, headers["Retry-After"]) == (503, "5")  # the write itself is what needs memory
    status, health = site.json("GET", "/health/")
    assert (status, health["status"]) == (200, "degraded")
    assert "refuses writes" in health["detail"]

    assert site.request("DELETE", f"{SESSIONS}{second['id']}/")[0] == 204
    assert site.json("GET", f"{SESSIONS}{second['id']}/")[0] == 404

    # Room made (the operator drops the junk): writes and /health/ recover, nothing to restart.
    admin = private_redis.admin()
    junk = list(admin.scan_iter(match="junk:*", count=1000))
    admin.delete(*junk)
    assert site.json("POST", detail + "messages/", {"role": "user", "content": "more"})[0] == 201
    assert site.json("GET", "/health/")[1]["status"] == "ok"


@pytest.mark.django_db
def test_at_maxmemory_the_throttle_lets_requests_through_uncounted_and_still_refuses_those_over_it(
    private_cache: PrivateRedis, settings: Any, django_user_model: Any
) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"conversations": "2/min"},
    }
    private_cache.admin().config_set("maxmemory-policy", "noeviction")
    over, under = APIClient(), APIClient()
    over.force_authenticate(django_user_model.objects.create_user("over"))
    under.force_authenticate(django_user_model.objects.create_user("under"))
    assert [over.get(SESSIONS).status_code for _ in range(2)] == [200, 200]

    fill_to_maxmemory(private_cache)

    assert over.get(SESSIONS).status_code == 429  # its count is read, not written: no memory needed
    assert [under.get(SESSIONS).status_code for _ in range(4)] == [200] * 4  # not counted, not refused


def test_the_example_health_check_is_503_when_redis_is_unreachable(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    script = (
        "from django.test import Client\n"
        "r = Client().get('/health/')\n"
        "print('RESULT', r.status_code, r.json()['status'])\n"
    )
    env = {
        **os.environ,
        "REDIS_URL": url,
        "DEMO_DATABASE": str(tmp_path / "db.sqlite3"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), "shell", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "RESULT 503 unavailable" in result.stdout, result.stderr


# --------------------------------------------------------------------------------------------- report


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_the_report_warns_when_redis_may_evict(private_cache: PrivateRedis, policy: str) -> None:
    private_cache.admin().config_set("maxmemory-policy", policy)
    table, as_json = StringIO(), StringIO()

    call_command("conversations_report", stdout=table)
    call_command("conversations_report", "--format", "json", stdout=as_json)

    assert f"Warning: Redis's maxmemory-policy is {policy}, not noeviction" in table.getvalue()
    assert "an evicted idempotency record lets a retried write apply twice" in table.getvalue()
    assert [w.split(",")[0] for w in json.loads(as_json.getvalue())["warnings"]] == [
        f"Redis's maxmemory-policy is {policy}"
    ]


def test_the_report_does_not_warn_under_noeviction(private_cache: PrivateRedis) -> None:
    private_cache.admin().config_set("maxmemory-policy", "noeviction")
    out = StringIO()

    call_command("conversations_report", "--format", "json", stdout=out)

    assert json.loads(out.getvalue())["warnings"] == []


# --------------------------------------------------------------------------------------------- W004


def _store_cache(settings: Any, **options: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "OPTIONS": {"SOCKET_TIMEOUT": 2, **options}},
    }


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"REDIS_CLIENT_KWARGS": {"retry": Retry(ExponentialBackoff(), 3)}}, "a Retry of 3 retries"),
        ({"CONNECTION_POOL_KWARGS": {"retry_on_timeout": True}}, "retry_on_timeout=True"),
        ({"CONNECTION_POOL_KWARGS": {"retry": Retry(NoBackoff(), 1)}}, "a Retry of 1 retries"),
    ],
)
def test_w004_a_django_redis_cache_that_retries(settings: Any, options: dict[str, Any], named: str) -> None:
    _store_cache(settings, **options)

    messages = check_write_retries()

    assert [m.id for m in messages] == ["conversations.W004"]
    assert named in messages[0].msg
    assert "Retry(NoBackoff(), 0)" in str(messages[0].hint)


def test_w004_djangos_own_redis_cache_that_retries(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "builtin": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "OPTIONS": {"socket_timeout": 2, "retry_on_timeout": True},
        },
    }
    settings.CONVERSATIONS = {"CACHE_ALIAS": "builtin"}

    assert [m.id for m in check_write_retries()] == ["conversations.W004"]


def test_w004_a_client_factory_on_a_redis_py_that_retries_by_default(settings: Any) -> None:
    settings.CONVERSATIONS = {"CLIENT_FACTORY": "tests.test_hardening.check_write_retries"}
    defaults = getattr(redis.Redis().get_retry(), "_retries", 0)

    messages = check_write_retries()

    if defaults:  # redis-py 6 and later
        assert [m.id for m in messages] == ["conversations.W004"]
        assert f"retries a failed command {defaults} times" in messages[0].msg
    else:
        assert messages == []


def test_w004_is_quiet_for_clients_that_do_not_retry(settings: Any) -> None:
    assert check_write_retries() == []  # the test settings: django-redis's defaults
    _store_cache(settings, REDIS_CLIENT_KWARGS={"retry": Retry(NoBackoff(), 0)}, CONNECTION_POOL_KWARGS={})
    assert check_write_retries() == []


# --------------------------------------------------------------------------------------------- fakeredis demo


def test_the_demo_warns_when_several_gunicorn_workers_each_get_a_fakeredis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update({"DEMO_DATABASE": str(tmp_path / "db.sqlite3"), "PYTHONPATH": f"{ROOT}{os.pathsep}{EXAMPLE}"})
    script = "import sys; sys.argv = ['/venv/bin/gunicorn', '-w', '4', 'demo.wsgi']; import demo.settings"
    one = "import sys; sys.argv = ['/venv/bin/gunicorn', '--workers=1', 'demo.wsgi']; import demo.settings"

    several = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    single = subprocess.run([sys.executable, "-c", one], env=env, capture_output=True, text=True, check=True)

    assert re.search(r"gunicorn runs 4 workers on fakeredis.*own in-process store", several.stderr)
    assert "workers on fakeredis" not in single.stderr
    assert "fakeredis" in single.stderr  # the demo default is still said

"""Load test: the example project under gunicorn on the real Redis, N concurrent clients for T seconds.

    python loadtest/run.py                          # 50 clients, 30 s (make loadtest)
    python loadtest/run.py --clients 10 --duration 5 --json result.json

It prepares a throwaway SQLite database (migrate + ``ensure_demo_user``), starts gunicorn on a free
loopback port with ``REDIS_URL`` and a fresh ``CONVERSATIONS_KEY_PREFIX``, signs in once as the demo
user, and runs the clients. Each client, until the time is up: creates a session, appends messages
(each with an ``Idempotency-Key``; a failed request is retried with the same key), reads a page of
messages every few appends, then downloads the transcript and checks it holds exactly the messages the
server acknowledged, once each, in order, and deletes the session. At the end it prints requests,
statuses, lost and duplicated messages and latency percentiles, stops gunicorn and deletes every key
under its prefix (SCAN + UNLINK). The exit status is 0 only when there was no 5xx, no transport error
and no lost, duplicated or unexpected message.

Everything is bounded: the run stops after ``--duration`` seconds or ``--max-messages`` per client,
and a hard deadline kills it if a server stops answering.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import redis

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"


# ------------------------------------------------------------------------------------------ results


@dataclass
class Stats:
    """What one client saw. Merged at the end."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    retries: int = 0
    sessions_checked: int = 0
    messages_acked: int = 0
    lost: int = 0
    duplicated: int = 0
    phantom: int = 0

    def merge(self, other: Stats) -> None:
        for kind, values in other.latencies.items():
            self.latencies.setdefault(kind, []).extend(values)
        self.statuses.update(other.statuses)
        self.transport_errors += other.transport_errors
        self.unexpected += other.unexpected
        for name in ("retries", "sessions_checked", "messages_acked", "lost", "duplicated", "phantom"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# ------------------------------------------------------------------------------------------ HTTP client


class Client:
    """One simulated user agent: a keep-alive connection, the demo user's session cookie."""

    def __init__(self, port: int, auth_headers: dict[str, str], stats: Stats, deadline: float) -> None:
        self.port = port
        self.auth_headers = auth_headers
        self.stats = stats
        self.hard_deadline = deadline
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(
        self,
        kind: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: int,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one request, retrying transport errors, 5xx and 429 (with the same headers, so the same
        Idempotency-Key). Returns the decoded JSON (or None), or raises if ``expect`` is never met."""
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {"Accept": "application/json", **self.auth_headers, **(headers or {})}
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        for attempt in range(6):
            if time.monotonic() > self.hard_deadline:
                raise TimeoutError("hard deadline reached")
            if attempt:
                self.stats.retries += 1
            started = time.perf_counter()
            try:
                conn = self._connection()
                conn.request(method, path, body=payload, headers=all_headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.stats.transport_errors.append(f"{method} {kind}: {exc!r}")
                self.close()
                time.sleep(0.2)
                continue
            self.stats.latencies.setdefault(kind, []).append(time.perf_counter() - started)
            self.stats.statuses[response.status] += 1
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            if response.status == 429 or response.status >= 500:
                time.sleep(min(float(response.getheader("Retry-After") or 1), 5))
                continue
            if response.status != expect:
                raise AssertionError(f"{method} {kind}: {response.status} {data[:300]!r}")
            return json.loads(data) if data else None
        raise AssertionError(f"{method} {kind}: gave up after 6 attempts")


def run_client(
    number: int, port: int, auth_headers: dict[str, str], options: argparse.Namespace, stats: Stats
) -> None:
    """Sessions one after another until time is up; every session's transcript is checked."""
    stop_at = time.monotonic() + options.duration
    client = Client(port, auth_headers, stats, stop_at + 120)
    sent_total = 0
    try:
        while time.monotonic() < stop_at and sent_total < options.max_messages:
            session = client.request(
                "create", "POST", "/api/sessions/", {"title": f"load {number}"}, expect=201
            )
            base = f"/api/sessions/{session['id']}/"
            sent: list[str] = []
            while (
                len(sent) < options.messages_per_session
                and sent_total < options.max_messages
                and time.monotonic() < stop_at
            ):
                content = f"client {number} message {sent_total} {secrets.token_hex(4)}"
                body: dict[str, Any] = {"role": ("user", "assistant")[len(sent) % 2], "content": content}
                if len(sent) % 3 == 1:
                    body["sources"] = [{"url": f"https://example.com/{sent_total}", "title": "doc"}]
                message = client.request(
                    "append",
                    "POST",
                    f"{base}messages/",
                    body,
                    expect=201,
                    headers={"Idempotency-Key": f"lt-{number}-{sent_total}"},
                )
                sent.append(content)
                sent_total += 1
                stats.messages_acked += 1
                if message["id"] != len(sent):
                    stats.unexpected.append(
                        f"client {number}: message id {message['id']}, expected {len(sent)}"
                    )
                if len(sent) % 10 == 0:
                    page = client.request("read page", "GET", f"{base}messages/?limit=5", expect=200)
                    if len(page["results"]) != 5:
                        stats.unexpected.append(f"client {number}: a page of {len(page['results'])}")
                if len(sent) % 25 == 0:
                    client.request("list", "GET", "/api/sessions/?limit=10", expect=200)
            transcript = client.request("export", "GET", f"{base}export/?format=json", expect=200)
            check_transcript(number, sent, transcript, stats)
            client.request("delete", "DELETE", base, expect=204)
    except (AssertionError, TimeoutError, ValueError, KeyError) as exc:
        stats.unexpected.append(f"client {number}: {exc}")
    finally:
        client.close()


def run_bare_client(port: int, auth_headers: dict[str, str], duration: float, counts: list[int]) -> None:
    """``GET /bare/`` (the bare DRF view: the same authentication, one redis-py GET) over and over."""
    stop_at = time.monotonic() + duration
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Accept": "application/json", **auth_headers}
    done = 0
    try:
        while time.monotonic() < stop_at:
            conn.request("GET", "/bare/", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                done += 1
    except (OSError, http.client.HTTPException):
        pass
    finally:
        conn.close()
        counts.append(done)


def bare_requests_per_s(port: int, auth_headers: dict[str, str], clients: int, duration: float) -> float:
    """Requests/s of the bare view under as many clients, on the same server, right after the run."""
    counts: list[int] = []
    threads = [
        threading.Thread(target=run_bare_client, args=(port, auth_headers, duration, counts), daemon=True)
        for _ in range(clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 60)
    return sum(counts) / (time.monotonic() - started)


def check_transcript(number: int, sent: list[str], transcript: dict[str, Any], stats: Stats) -> None:
    got = [m["content"] for m in transcript["messages"]]
    counts = Counter(got)
    stats.sessions_checked += 1
    stats.lost += sum(1 for content in sent if content not in counts)
    stats.duplicated += sum(n - 1 for n in counts.values() if n > 1)
    stats.phantom += sum(1 for content in counts if content not in set(sent))
    if got != sent and not (set(got) - set(sent)) and len(got) == len(sent):
        stats.unexpected.append(f"client {number}: messages out of order")
    if [m["id"] for m in transcript["messages"]] != list(range(1, len(got) + 1)):
        stats.unexpected.append(f"client {number}: message ids are not 1..n")
    if transcript["message_count"] != len(got):
        stats.unexpected.append(f"client {number}: message_count {transcript['message_count']} != {len(got)}")


# ------------------------------------------------------------------------------------------ the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environment(options: argparse.Namespace, database: Path, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": options.redis_url,
            "CONVERSATIONS_KEY_PREFIX": prefix,
            "DEMO_DATABASE": str(database),
            "DJANGO_DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "loadtest.settings",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(EXAMPLE), env.get("PYTHONPATH")])),
        }
    )
    return env


def prepare_database(env: dict[str, str]) -> None:
    for command in (["migrate", "--noinput", "-v", "0"], ["ensure_demo_user"]):
        subprocess.run(
            [sys.executable, str(EXAMPLE / "manage.py"), *command],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=300,
        )


def start_gunicorn(
    env: dict[str, str], port: int, options: argparse.Namespace, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "demo.wsgi:application",
        "--chdir",
        str(EXAMPLE),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(options.workers),
        "--threads",
        str(options.threads),
        "--worker-class",
        "gthread",
        "--timeout",
        "60",
        "--keep-alive",
        "30",
        "--error-logfile",
        str(log),
    ]
    with log.open("ab") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=sink)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health/")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"gunicorn did not answer on port {port}:\n{log.read_text()[-3000:]}")


def sign_in(port: int, username: str, password: str) -> dict[str, str]:
    """Log in once through DRF's login page and return the headers every client sends: the session
    cookie and the CSRF token. (All clients are the demo user; one login spares 50 password hashes.)"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api-auth/login/")
    response = conn.getresponse()
    page = response.read().decode()
    cookies = _cookies(response)
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if match is None:
        raise RuntimeError("no CSRF token on the login page")
    form = urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1), "next": "/"}
    )
    conn.request(
        "POST",
        "/api-auth/login/",
        body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={cookies['csrftoken']}",
        },
    )
    response = conn.getresponse()
    response.read()
    cookies.update(_cookies(response))
    conn.close()
    if response.status != 302 or "sessionid" not in cookies:
        raise RuntimeError(f"login as {username!r} failed: {response.status}")
    return {
        "Cookie": f"sessionid={cookies['sessionid']}; csrftoken={cookies['csrftoken']}",
        "X-CSRFToken": cookies["csrftoken"],
    }


def _cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    found = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        found[name.strip()] = rest.split(";", 1)[0]
    return found


def basic_auth(username: str, password: str) -> dict[str, str]:
    import base64

    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def delete_prefix(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url, socket_timeout=10)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    client.close()
    return deleted


# ------------------------------------------------------------------------------------------ main


def summarize(stats: Stats, options: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    everything = [v for values in stats.latencies.values() for v in values]
    requests = sum(stats.statuses.values())

    def millis(values: list[float]) -> dict[str, float]:
        return {
            "count": len(values),
            "p50_ms": round(percentile(values, 50) * 1000, 1),
            "p95_ms": round(percentile(values, 95) * 1000, 1),
            "p99_ms": round(percentile(values, 99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1) if values else float("nan"),
            "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else float("nan"),
        }

    return {
        "clients": options.clients,
        "duration_s": round(elapsed, 1),
        "workers": options.workers,
        "threads": options.threads,
        "auth": options.auth,
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1) if elapsed else 0.0,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "5xx": sum(v for k, v in stats.statuses.items() if k >= 500),
        "429": stats.statuses.get(429, 0),
        "transport_errors": len(stats.transport_errors),
        "retries": stats.retries,
        "messages_acknowledged": stats.messages_acked,
        "sessions_checked": stats.sessions_checked,
        "lost": stats.lost,
        "duplicated": stats.duplicated,
        "unexpected_messages": stats.phantom,
        "problems": stats.unexpected[:20] + stats.transport_errors[:20],
        "latency": {"all": millis(everything), **{k: millis(v) for k, v in sorted(stats.latencies.items())}},
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"{summary['clients']} clients, {summary['duration_s']} s, gunicorn {summary['workers']} workers x "
        f"{summary['threads']} threads, auth {summary['auth']}"
    )
    print(
        f"requests {summary['requests']} ({summary['requests_per_s']}/s)  statuses {summary['statuses']}  "
        f"5xx {summary['5xx']}  transport errors {summary['transport_errors']}  retries {summary['retries']}"
    )
    if summary.get("bare_requests_per_s") is not None:
        print(
            f"bare DRF view (same server, same clients, one redis-py GET): "
            f"{summary['bare_requests_per_s']}/s; the app's requests/s are {summary['ratio_to_bare']} x that"
        )
    print(
        f"messages acknowledged {summary['messages_acknowledged']} in {summary['sessions_checked']} "
        f"checked sessions: lost {summary['lost']}, duplicated {summary['duplicated']}, "
        f"unexpected {summary['unexpected_messages']}"
    )
    print(f"{'latency (ms)':<14}{'count':>8}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    for kind, row in summary["latency"].items():
        print(
            f"{kind:<14}{row['count']:>8}{row['p50_ms']:>9}{row['p95_ms']:>9}{row['p99_ms']:>9}{row['max_ms']:>9}"
        )
    for problem in summary["problems"]:
        print(f"problem: {problem}")


def passed(summary: dict[str, Any]) -> bool:
    return (
        summary["5xx"] == 0
        and summary["transport_errors"] == 0
        and summary["lost"] == summary["duplicated"] == summary["unexpected_messages"] == 0
        and not summary["problems"]
        and summary["sessions_checked"] > 0
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--max-messages", type=int, default=5_000, help="appends per client, at most")
    parser.add_argument("--messages-per-session", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument(
        "--auth",
        choices=["session", "basic"],
        default="session",
        help="session: sign in once, send the cookie (default); basic: HTTP Basic on every request, "
        "which costs one PBKDF2 password hash (about 0.5 s of CPU here) per request",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--bare-duration",
        type=float,
        default=None,
        help="seconds of GET /bare/ (the bare DRF view) after the run, to compare requests/s with "
        "(default: as long as the run; 0 skips it)",
    )
    parser.add_argument("--json", type=Path, help="also write the summary to this file")
    options = parser.parse_args(argv)
    if options.bare_duration is None:
        options.bare_duration = options.duration
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    redis.Redis.from_url(options.redis_url, socket_timeout=5).ping()
    prefix = f"loadtest-{secrets.token_hex(6)}"
    workdir = Path(tempfile.mkdtemp(prefix="conversations-loadtest-"))
    env = server_environment(options, workdir / "db.sqlite3", prefix)
    port = free_port()
    server: subprocess.Popen[bytes] | None = None
    bare: float | None = None
    try:
        prepare_database(env)
        server = start_gunicorn(env, port, options, workdir / "gunicorn.log")
        username = os.environ.get("DEMO_USERNAME", "demo")
        password = os.environ.get("DEMO_PASSWORD", "demo-password")
        headers = (
            sign_in(port, username, password) if options.auth == "session" else basic_auth(username, password)
        )
        per_client = [Stats() for _ in range(options.clients)]
        threads = [
            threading.Thread(target=run_client, args=(n, port, headers, options, per_client[n]), daemon=True)
            for n in range(options.clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(1.0, started + options.duration + 180 - time.monotonic()))
        elapsed = time.monotonic() - started
        stats = Stats()
        for one in per_client:
            stats.merge(one)
        if any(t.is_alive() for t in threads):
            stats.unexpected.append("a client did not finish before the hard deadline")
        bare = (
            bare_requests_per_s(port, headers, options.clients, options.bare_duration)
            if options.bare_duration > 0
            else None
        )
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        removed = delete_prefix(options.redis_url, prefix)
    summary = summarize(stats, options, elapsed)
    summary["bare_requests_per_s"] = None if bare is None else round(bare, 1)
    summary["ratio_to_bare"] = None if not bare else round(summary["requests_per_s"] / bare, 2)
    summary["key_prefix"] = prefix
    summary["keys_cleaned_up"] = removed
    print_summary(summary)
    if options.json:
        options.json.write_text(json.dumps(summary, indent=2))
    ok = passed(summary)
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
        print("PASS")
    else:
        print(f"FAIL (the server's log and database are kept in {workdir})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The load test (loadtest/run.py), short: 10 clients for 5 s against gunicorn and the real Redis.

The full run (50 clients, 30 s) is ``make loadtest``; this one keeps CI honest about the same claims:
no 5xx, no transport error, every acknowledged message in its transcript exactly once and in order,
nothing left behind in Redis, and the bare view's requests/s measured beside the app's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def test_short_load_run_loses_nothing_and_never_fails(redis_url: str, tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "loadtest" / "run.py"),
            "--clients",
            "10",
            "--duration",
            "5",
            "--bare-duration",
            "2",
            "--redis-url",
            redis_url,
            "--json",
            str(result_file),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    summary = json.loads(result_file.read_text())
    assert summary["5xx"] == 0, output
    assert summary["transport_errors"] == 0, output
    assert summary["lost"] == summary["duplicated"] == summary["unexpected_messages"] == 0, output
    assert summary["sessions_checked"] >= 10, output  # every client finished at least one session
    assert summary["messages_acknowledged"] >= 100, output
    assert summary["latency"]["all"]["p99_ms"] > 0
    # The bare view ran on the same server after the load, and the ratio is reported (not held to a
    # bar here: 10 clients for 5 s on a shared machine say little about throughput).
    assert summary["bare_requests_per_s"] > 0
    assert summary["ratio_to_bare"] == round(summary["requests_per_s"] / summary["bare_requests_per_s"], 2)
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    leftovers = list(client.scan_iter(match=f"{summary['key_prefix']}:*", count=1000))
    client.close()
    assert leftovers == []

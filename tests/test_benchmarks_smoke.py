"""The benchmark (``make bench``) runs end to end at tiny sizes, so it cannot rot. Timings are never
asserted here: the machine is shared and noisy; the bench is run by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from benchmarks import run as bench

pytestmark = [pytest.mark.redis, pytest.mark.django_db]

FIGURES = [
    "redis-py GET round trip",
    "redis-py PING round trip",
    "append at message",
    "append growth",
    "last 5 of",
    "one owner's newest 3 sessions",
    "listing growth",
    "Redis memory per message",
    "cycle (create + 2 appends + last 2), 1 client, 20-character messages",
    "cycle (create + 2 appends + last 2), 1 client, chat mix",
    "cycle, 2 processes, 20-character messages",
    "HTTP: POST a message",
    "HTTP: GET a page of 20 messages",
    "HTTP: GET a page of 20 sessions",
    "async append at message 10",
    "async last 5 of",
    "100 concurrent tasks appending",
    "update_message at message",
    "extend_message at message",
    "delete_message at message",
    "truncate_messages at message",
    "pop_message at message",
    "append_messages of 5 at message",
    "get_message at message",
    "get_context, a 5-message window",
    "list_sessions, all 30 sessions",
    "conversations_report, 300 sessions",
    "conversations_report, peak resident memory",
    "conversations_report, longest script call",
]


def test_the_benchmark_runs_end_to_end_and_cleans_up(
    key_prefix: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    report = bench.run(smoke=True, progress=lambda message: None)

    figures = [row.figure for row in report.rows]
    for wanted in FIGURES:
        assert any(figure.startswith(wanted) for figure in figures), (wanted, figures)
    # Every bar of the issue is judged in the table, each with a verdict.
    # 10 of round 1 (2 of them HTTP); the session list over HTTP; async 3; 7 message operations at 2
    # sizes and get_context; listing; report 2.
    assert len(report.bars) == 10 + 1 + 3 + 15 + 1 + 2, [row.figure for row in report.bars]
    assert all(row.app for row in report.rows), "a figure came out empty"

    written = bench.write_report(report, tmp_path / "latest.md")
    assert (tmp_path / "latest.md").read_text(encoding="utf-8") == written
    assert "| append at message 3 |" in written
    assert "Bars held:" in written

    # The run wrote only under its own prefix, and deleted all of it.
    assert report.prefix.startswith("bench-")
    assert list(redis_client.scan_iter(match=f"{report.prefix}:*", count=1000)) == []

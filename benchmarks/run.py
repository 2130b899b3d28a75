#!/usr/bin/env python
"""Benchmark django-conversations against raw redis-py round trips and the seed's store, in one run.

    make bench                       # = .venv/bin/python benchmarks/run.py
    REDIS_URL=redis://host:6379/1 make bench
    python benchmarks/run.py --skip-processes --output /tmp/bench.md

Prints a markdown table and writes it to benchmarks/results/latest.md. Needs a Redis (REDIS_URL,
default redis://127.0.0.1:6379/0); writes only under its own key prefix and deletes it at the end.
How figures are taken: see benchmarks/timing.py.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "latest.md"


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()


@contextmanager
def bench_settings(prefix: str, cache_alias: str) -> Iterator[None]:
    """The app's settings for the run: its own key prefix, room for 10,000+ messages, a short TTL."""
    from django.test import override_settings

    with override_settings(
        CONVERSATIONS={
            "CACHE_ALIAS": cache_alias,
            "KEY_PREFIX": prefix,
            "MAX_MESSAGES": 100_000,
            "SESSION_TTL": 900,
        }
    ):
        yield


def delete_prefix(client: Any, prefix: str) -> int:
    deleted = 0
    batch: list[Any] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def machine_notes(client: Any) -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if models:
            cpu = models[0]
    except OSError:
        pass
    server = client.info("server")
    parser_class = client.connection_pool.connection_kwargs.get("parser_class")
    parser = getattr(parser_class, "__name__", "the default parser")

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return [
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"load average at start {load}.",
        f"Python {platform.python_version()}, Redis {server.get('redis_version')} "
        f"({client.connection_pool.connection_kwargs.get('host', '?')}), redis-py {version('redis')} "
        f"with {parser} (hiredis {version('hiredis')}), Django {version('Django')}, "
        f"DRF {version('djangorestframework')}, orjson {version('orjson')}.",
    ]


def run(
    *,
    smoke: bool = False,
    processes: bool = True,
    http: bool = True,
    scale: bool = False,
    progress: Callable[[str], object] = lambda message: print(message, file=sys.stderr),
) -> Any:
    """Run every benchmark and return the ``benchmarks.report.Report``; Django must be set up."""
    from benchmarks import store_bench as sb
    from benchmarks.report import Report
    from benchmarks.seed_baseline import SeedStore
    from conversations.conf import conf
    from conversations.store import get_redis_client, get_store

    sizes = sb.Sizes.smoke() if smoke else sb.Sizes()
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    alias = conf.CACHE_ALIAS
    report = Report(prefix=prefix)
    with bench_settings(prefix, alias):
        client = get_redis_client()
        store = get_store()
        report.notes.extend(machine_notes(client))
        ref_key = f"{prefix}:ref"
        client.set(ref_key, b"v")
        bench = sb.Bench(
            client=client,
            store=store,
            seed=SeedStore(client, prefix=f"{prefix}:seed:session:", ttl=store.config.session_ttl),
            prefix=prefix,
            sizes=sizes,
            ref=lambda: client.get(ref_key),
        )
        try:
            _store_rows(bench, report, processes=processes, progress=progress)
            _round2_rows(bench, report, scale=scale, progress=progress)
            if http:
                from benchmarks import http_bench

                progress("HTTP...")
                http_bench.add_rows(bench, report)
        finally:
            progress("cleaning up...")
            delete_prefix(client, prefix)
    report.notes.append(
        f"Each time is the best of {sizes.rounds} rounds' medians of {sizes.reps} calls (the seed's: "
        f"{sizes.seed_rounds} rounds, fewer calls where they take long), each call timed right after a "
        "GET on the same client. The app's "
        "ratio is the median over rounds of its time over the GET's timed beside it; growth ratios are "
        "ratios of those. The seed's ratio is its time over the reference GET (its big replies disturb "
        "a GET timed beside them). HTTP ratios are over the bare DRF view, timed likewise. "
        f"Messages are {sizes.content_chars} characters unless a row says otherwise. Cycles/s are the "
        f"best of {sizes.cycle_rounds} batches of {sizes.cycle_batch} cycles, the workloads taking turns; "
        f"{sizes.processes} processes: spawned, each with its own client, summed over "
        f"{sizes.process_seconds:g} s. See benchmarks/timing.py."
    )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    report.notes.append(f"Load average at the end: {load}.")
    return report


def _store_rows(bench: Any, report: Any, *, processes: bool, progress: Callable[[str], object]) -> None:
    from benchmarks import store_bench as sb
    from benchmarks.report import (
        APPEND_BAR,
        CYCLE_RATE_BAR,
        CYCLE_SEED_BAR,
        GROWTH_BAR,
        LISTING_BAR,
        READ_BAR,
        Row,
        ms_or_us,
        us,
        x,
    )

    sizes = bench.sizes
    progress("reference round trips...")
    ref = sb.bench_reference(bench)
    get_us = ref["GET"].op_us
    report.add(Row("redis-py GET round trip (the reference)", us(get_us), x(1.0)))
    report.add(Row("redis-py PING round trip", us(ref["PING"].op_us), x(ref["PING"].ratio)))

    def timed_rows(label: str, app: dict[int, Any], seed: dict[int, Any], bar: float | None) -> None:
        """One row per size: the app's time and ratio, the seed's, and the bar (a multiple of GET) if any."""
        for n in app:
            ratio = app[n].ratio
            report.add(
                Row(
                    label.format(n=n),
                    us(app[n].op_us),
                    x(ratio),
                    ms_or_us(seed[n].op_us),
                    x(seed[n].op_us / get_us),
                    "" if bar is None else f"≤ {bar:g} x GET",
                    None if bar is None else ratio <= bar,
                )
            )

    def growth_row(label: str, app: dict[int, Any], seed: dict[int, Any], bar: float) -> None:
        """The ratio of the biggest size's GET ratio to the smallest's (the seed's: of its times)."""
        first, last = min(app), max(app)
        growth = app[last].ratio / app[first].ratio
        label = label.format(first=first, last=last)
        seed_growth = seed[last].op_us / seed[first].op_us
        report.add(Row(label, f"{growth:.2f}x", "", f"{seed_growth:,.1f}x", "", f"≤ {bar:g}x", growth <= bar))

    progress("append...")
    app, seed = sb.bench_append(bench)
    timed_rows("append at message {n:,}", app, seed, APPEND_BAR)
    growth_row("append growth, message {first:,} → {last:,}", app, seed, GROWTH_BAR)

    progress("read the last messages...")
    app, seed = sb.bench_read_last(bench)
    timed_rows(f"last {sizes.read_last} of {{n:,}} messages", app, seed, READ_BAR)

    progress("listing (fills up to the largest total)...")
    app, seed = sb.bench_listing(bench)
    timed_rows(
        f"one owner's newest {sizes.listing_page} sessions, {{n:,}} sessions in Redis", app, seed, None
    )
    growth_row("listing growth, {first:,} → {last:,} sessions", app, seed, LISTING_BAR)

    progress("memory...")
    memory = sb.bench_memory(bench)
    report.add(
        Row(
            f"Redis memory per message ({sizes.memory_messages:,} of {sizes.content_chars} characters)",
            f"{memory.app_bytes_per_message:,.0f} B",
            f"INFO Δ {memory.app_info_delta_per_message:,.0f} B",
            f"{memory.seed_bytes_per_message:,.0f} B",
        )
    )

    progress("cycles, one client...")
    rates = sb.bench_cycle(bench)
    cycle = f"create + {sizes.cycle_appends} appends + last {sizes.cycle_read}"
    for kind, label in (
        ("", f"{sizes.content_chars}-character messages"),
        (
            " chat",
            f"chat mix: {sizes.content_chars}-character questions, "
            f"{sizes.chat_answer_chars:,}-character answers with 2 sources",
        ),
    ):
        app_rate, seed_rate = rates["app" + kind], rates["seed" + kind]
        report.add(
            Row(
                f"cycle ({cycle}), 1 client, {label}",
                f"{app_rate:,.0f}/s",
                x(app_rate / seed_rate, "seed"),
                f"{seed_rate:,.0f}/s",
                "",
                f"≥ {CYCLE_SEED_BAR:g} x seed and ≥ {CYCLE_RATE_BAR:,.0f}/s",
                app_rate >= CYCLE_SEED_BAR * seed_rate and app_rate >= CYCLE_RATE_BAR,
            )
        )
    if processes:
        progress(f"cycles, {sizes.processes} processes...")
        rates = sb.bench_cycle_processes(bench)
        report.add(
            Row(
                f"cycle, {sizes.processes} processes, {sizes.content_chars}-character messages",
                f"{rates['app']:,.0f}/s",
                x(rates["app"] / rates["seed"], "seed"),
                f"{rates['seed']:,.0f}/s",
            )
        )


def _round2_rows(bench: Any, report: Any, *, scale: bool, progress: Callable[[str], object]) -> None:
    """The rows of issues 11, 12 and 14: async calls, message operations, the full listing, the report."""
    from benchmarks import async_bench, lifecycle_bench, report_scale
    from benchmarks import store_bench as sb
    from benchmarks.report import (
        ASYNC_APPEND_BAR,
        ASYNC_READ_BAR,
        CONCURRENT_BAR,
        CONTEXT_BAR,
        FULL_LISTING_BAR,
        LIFECYCLE_BAR,
        REPORT_RSS_BAR,
        REPORT_SECONDS_BAR,
        Row,
        us,
        x,
    )

    sizes = bench.sizes
    progress("async...")
    timings, append_rate, get_rate = async_bench.bench_async(bench)
    for key, label, bar in (
        ("append", "async append at message 10", ASYNC_APPEND_BAR),
        (
            "read",
            f"async last {sizes.read_last} of {max(sizes.read_at[0], sizes.read_last):,} messages",
            ASYNC_READ_BAR,
        ),
    ):
        t = timings[key]
        report.add(
            Row(label, us(t.op_us), x(t.ratio, "async GET"), "", "", f"≤ {bar:g} x async GET", t.ratio <= bar)
        )
    ratio = append_rate / get_rate
    report.add(
        Row(
            "100 concurrent tasks appending (async)",
            f"{append_rate:,.0f}/s",
            x(ratio, "100 tasks' GETs"),
            "",
            "",
            f"≥ {CONCURRENT_BAR:g} x GETs/s",
            ratio >= CONCURRENT_BAR,
        )
    )
    progress("message operations...")
    life = lifecycle_bench.bench_lifecycle(bench)
    for name, t in life.items():
        op, n = name.rsplit(" ", 1)
        if op == "get_context":
            label = f"get_context, a {sizes.read_last}-message window of {int(n):,} messages"
            bar = CONTEXT_BAR
        else:
            label = f"{op} at message {int(n):,}"
            bar = LIFECYCLE_BAR
        report.add(Row(label, us(t.op_us), x(t.ratio), "", "", f"≤ {bar:g} x GET", t.ratio <= bar))
    progress("full listing...")
    full = sb.bench_full_listing(bench)
    report.add(
        Row(
            f"list_sessions, all {sizes.full_listing_sessions:,} sessions of one owner",
            f"{full.op_us / 1000:,.1f} ms",
            x(full.ratio, "SCAN"),
            "",
            "",
            f"≤ {FULL_LISTING_BAR:g} x SCAN",
            full.ratio <= FULL_LISTING_BAR,
        )
    )
    sessions = 1_000_000 if scale else sizes.report_sessions
    progress(f"conversations_report over {sessions:,} sessions...")
    result = report_scale.run_scale(sessions, progress=progress)
    # The million-session bars, scaled to the run's size (a smaller run is judged per session).
    seconds_bar = REPORT_SECONDS_BAR * sessions / 1_000_000
    report.add(
        Row(
            f"conversations_report, {result.sessions:,} sessions ({result.messages:,} messages)",
            f"{result.wall_seconds:,.2f} s",
            f"{result.wall_seconds / result.sessions * 1e6:.1f} µs/session",
            "",
            f"CPU: client {result.client_cpu_seconds:.1f} s, Redis {result.redis_cpu_seconds:.1f} s",
            f"≤ {seconds_bar:g} s",
            result.wall_seconds <= seconds_bar,
        )
    )
    report.add(
        Row(
            "conversations_report, peak resident memory",
            f"{result.max_rss_mb:,.0f} MB",
            "",
            "",
            "",
            f"≤ {REPORT_RSS_BAR:g} MB",
            result.max_rss_mb <= REPORT_RSS_BAR,
        )
    )
    report.add(
        Row(
            "conversations_report, longest script call",
            f"{result.longest_call_ms:,.1f} ms",
            f"Redis SLOWLOG: {result.slowest_redis_ms:,.1f} ms; mean {result.mean_script_ms:,.2f} ms",
            "",
            f"{result.slow_calls:,} commands over 0.5 ms of {result.script_calls:,} script calls",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the table")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the bench runs")
    parser.add_argument("--skip-processes", action="store_true", help="skip the multi-process cycle")
    parser.add_argument("--skip-http", action="store_true", help="skip the HTTP benchmarks")
    parser.add_argument(
        "--scale", action="store_true", help="run the report over 1,000,000 sessions (a few minutes, ~2 GB)"
    )
    args = parser.parse_args(argv)
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    report = run(
        smoke=args.smoke, processes=not args.skip_processes, http=not args.skip_http, scale=args.scale
    )
    print(write_report(report, args.output))
    return 0


def write_report(report: Any, output: Path) -> str:
    """Write the report's table (with its date) to ``output``; return what was written."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"## Benchmark, {stamp}\n\n{report.markdown()}\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    sys.exit(main())

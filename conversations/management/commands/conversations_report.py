"""``manage.py conversations_report``: what is in Redis now. See ``conversations.operations.report``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django.utils.translation import gettext_lazy as _

from conversations.management.arguments import OptionTypesCommand, duration, owner, whole_number
from conversations.management.errors import command_errors
from conversations.operations.report import DEFAULT_STALLED_AFTER, ReportOptions, build_report
from conversations.operations.report_output import FORMATS, render
from conversations.operations.scanning import Progress
from conversations.store import get_store

MAX_TOP = 1000


class Command(OptionTypesCommand):
    help = str(
        _(
            "Report what is in Redis: sessions, messages, ages, idle times, TTLs, memory, the largest "
            "sessions, the busiest owners, corrupt keys and owner-index drift. Streams with SCAN; safe "
            "on a production Redis. Reads only, unless --repair (which writes to the owner indexes)."
        )
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--format",
            default="table",
            choices=FORMATS,
            help=str(_("Output format: table (default), json or csv.")),
        )
        parser.add_argument(
            "--owner", type=owner, help=str(_("Only the sessions of this owner (e.g. user:42)."))
        )
        parser.add_argument(
            "--idle-longer-than",
            type=duration,
            metavar="DURATION",
            help=str(_("Only sessions idle longer than this: 90 (seconds), 90s, 15m, 2h, 1d.")),
        )
        parser.add_argument(
            "--stalled-after",
            type=duration,
            default=DEFAULT_STALLED_AFTER,
            metavar="DURATION",
            help=str(
                _(
                    "Count as stalled replies the in-progress messages of sessions idle longer than "
                    "this (default 10m)."
                )
            ),
        )
        parser.add_argument(
            "--top",
            type=whole_number(1, MAX_TOP),
            default=10,
            metavar="N",
            help=str(_("How many largest sessions and busiest owners to list (default 10, at most %d)."))
            % MAX_TOP,
        )
        parser.add_argument(
            "--memory-sample",
            type=whole_number(0),
            default=10,
            metavar="N",
            help=str(_("Run MEMORY USAGE on 1 session in N and extrapolate (default 10; 0: off).")),
        )
        parser.add_argument(
            "--repair",
            action="store_true",
            help=str(
                _(
                    "WRITES to Redis: fix the index drift found, dropping stale owner-index entries and "
                    "adding sessions missing from their owner's index. Without it the report only reads."
                )
            ),
        )
        parser.add_argument(
            "--progress",
            action="store_true",
            help=str(_("Show a progress bar on stderr even when it is not a terminal.")),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report_options = ReportOptions(
            owner=options["owner"],
            idle_longer_than=options["idle_longer_than"],
            top=options["top"],
            memory_sample_every=options["memory_sample"],
            repair=bool(options["repair"]),
            stalled_after=options["stalled_after"],
        )
        progress = Progress(
            lambda line: self.stderr.write(line, style_func=str, ending=""),
            enabled=bool(options["progress"]) or self.stderr.isatty(),
        )
        with command_errors():
            report = build_report(get_store(), report_options, progress)
        self.stdout.write(render(report, options["format"]), ending="")
        if report_options.repair:
            # The one option of a report that changes data says what it changed, on stderr so that
            # stdout stays the report a script parses.
            drift = report["index_drift"]
            self.stderr.write(
                _(
                    "--repair wrote to Redis: removed %(stale)s stale index entries, "
                    "added %(missing)s missing ones."
                )
                % {"stale": f"{drift['repaired_stale']:,}", "missing": f"{drift['repaired_missing']:,}"}
            )

"""``manage.py conversations_report``: what is in Redis now. See ``conversations.operations.report``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext_lazy as _

from conversations.exceptions import ConversationError
from conversations.management.errors import command_errors
from conversations.operations.durations import parse_duration
from conversations.operations.report import ReportOptions, build_report
from conversations.operations.report_output import FORMATS, render
from conversations.operations.scanning import Progress
from conversations.store import get_store
from conversations.store.validation import owner_value

MAX_TOP = 1000


class Command(BaseCommand):
    help = str(
        _(
            "Report what is in Redis: sessions, messages, ages, idle times, TTLs, memory, the largest "
            "sessions, the busiest owners, corrupt keys and owner-index drift. Streams with SCAN; safe "
            "on a production Redis."
        )
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--format", default="table", help=str(_("Output format: table (default), json or csv."))
        )
        parser.add_argument("--owner", help=str(_("Only the sessions of this owner (e.g. user:42).")))
        parser.add_argument(
            "--idle-longer-than",
            metavar="DURATION",
            help=str(_("Only sessions idle longer than this: 90 (seconds), 90s, 15m, 2h, 1d.")),
        )
        parser.add_argument(
            "--top", default=10, help=str(_("How many largest sessions and busiest owners to list."))
        )
        parser.add_argument(
            "--memory-sample",
            default=10,
            metavar="N",
            help=str(_("Run MEMORY USAGE on 1 session in N and extrapolate (default 10; 0: off).")),
        )
        parser.add_argument(
            "--repair",
            action="store_true",
            help=str(_("Fix index drift: drop stale index entries, add sessions missing from it.")),
        )
        parser.add_argument(
            "--progress",
            action="store_true",
            help=str(_("Show a progress bar on stderr even when it is not a terminal.")),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        fmt = options["format"]
        if fmt not in FORMATS:
            raise CommandError(_("--format must be one of: %s.") % ", ".join(FORMATS))
        try:
            report_options = ReportOptions(
                owner=None if options["owner"] is None else owner_value(options["owner"]),
                idle_longer_than=(
                    None
                    if options["idle_longer_than"] is None
                    else parse_duration(options["idle_longer_than"], field="--idle-longer-than")
                ),
                top=_int_option(options["top"], "--top", minimum=1, maximum=MAX_TOP),
                memory_sample_every=_int_option(options["memory_sample"], "--memory-sample", minimum=0),
                repair=bool(options["repair"]),
            )
        except ConversationError as exc:
            raise CommandError(f"{getattr(exc, 'field', None) or 'option'}: {exc}") from exc
        progress = Progress(
            lambda line: self.stderr.write(line, style_func=str, ending=""),
            enabled=bool(options["progress"]) or self.stderr.isatty(),
        )
        with command_errors():
            report = build_report(get_store(), report_options, progress)
        self.stdout.write(render(report, fmt), ending="")


def _int_option(value: Any, name: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise CommandError(_("%(name)s must be a whole number.") % {"name": name}) from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise CommandError(_("%(name)s must be %(bound)s.") % {"name": name, "bound": bound})
    return number

"""``manage.py conversations_purge``: delete sessions by owner, by idle time, or all of them."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils.translation import gettext_lazy as _

from conversations.management.arguments import OptionTypesCommand, duration, owner
from conversations.management.errors import command_errors, option_errors
from conversations.operations.durations import format_duration
from conversations.operations.purge import MatchedSession, PurgeCriteria, purge_sessions
from conversations.store import get_store


class Command(OptionTypesCommand):
    help = str(
        _(
            "Delete sessions by --owner, by --idle-longer-than, or --all, through the store's own delete "
            "(signals fire, owner indexes stay true). Asks for confirmation unless --noinput."
        )
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--owner", type=owner, help=str(_("Delete the sessions of this owner (e.g. user:42)."))
        )
        which.add_argument(
            "--idle-longer-than",
            type=duration,
            metavar="DURATION",
            help=str(_("Delete sessions idle longer than this: 90 (seconds), 90s, 15m, 2h, 1d.")),
        )
        which.add_argument(
            "--all", action="store_true", dest="everything", help=str(_("Delete every session."))
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help=str(_("List the sessions that would be deleted; delete nothing.")),
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help=str(_("Do not ask for confirmation.")),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with option_errors():
            criteria = PurgeCriteria(
                owner=options["owner"],
                idle_longer_than=options["idle_longer_than"],
                everything=bool(options["everything"]),
            )
        dry_run = bool(options["dry_run"])
        store = get_store()
        with command_errors():
            if dry_run:
                result = purge_sessions(store, criteria, dry_run=True, on_match=self._would_delete)
                self.stdout.write(
                    _(
                        "Dry run, nothing deleted. "
                        "Sessions that would be deleted: %(n)s (%(m)s messages), %(what)s."
                    )
                    % {"n": f"{result.matched:,}", "m": f"{result.messages:,}", "what": criteria.describe()}
                )
                self._corrupt_note(result.corrupt)
                return
            if options["interactive"]:
                preview = purge_sessions(store, criteria, dry_run=True)
                if not preview.matched:
                    self.stdout.write(_("No sessions to delete (%(what)s).") % {"what": criteria.describe()})
                    return
                self._confirm(preview.matched, criteria)
            result = purge_sessions(store, criteria, dry_run=False)
        self.stdout.write(
            self.style.SUCCESS(
                _("Sessions deleted: %(n)s (%(m)s messages), %(what)s.")
                % {"n": f"{result.deleted:,}", "m": f"{result.messages:,}", "what": criteria.describe()}
            )
        )
        if result.gone:
            self.stdout.write(
                _("Sessions that expired or were deleted meanwhile: %(n)s.") % {"n": f"{result.gone:,}"}
            )
        self._corrupt_note(result.corrupt)

    def _would_delete(self, session: MatchedSession) -> None:
        self.stdout.write(
            f"would delete {session.session_id}  owner={session.owner or '(unowned)'}  "
            f"messages={session.messages}  idle={format_duration(session.idle_seconds)}"
        )

    def _corrupt_note(self, corrupt: int) -> None:
        if corrupt:
            self.stderr.write(
                _("Unreadable session keys skipped: %(n)s (run conversations_report to see them).")
                % {"n": f"{corrupt:,}"}
            )

    def _confirm(self, count: int, criteria: PurgeCriteria) -> None:
        question = _(
            "Sessions to delete: %(n)s, %(what)s. This cannot be undone.\n"
            "Type 'yes' to continue, or 'no' to cancel: "
        ) % {"n": f"{count:,}", "what": criteria.describe()}
        try:
            answer = input(question)
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            raise CommandError(_("Purge cancelled; nothing was deleted."))

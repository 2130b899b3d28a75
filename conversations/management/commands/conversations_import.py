"""``manage.py conversations_import``: import the seed store's sessions. See
``conversations.operations.seed_import``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils.translation import gettext_lazy as _

from conversations.management.arguments import OptionTypesCommand, non_empty, owner
from conversations.management.errors import command_errors, option_errors
from conversations.operations.seed_import import (
    DEFAULT_SOURCE_PREFIX,
    ImportOptions,
    import_seed_sessions,
    mapping_key,
    write_mapping,
)
from conversations.store import get_store


class Command(OptionTypesCommand):
    help = str(
        _(
            "Import sessions written by the seed store (JSON strings at session:<id>) into this app's "
            "layout, with new ids. Idempotent: a source imported once is never imported again."
        )
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--source-prefix",
            default=DEFAULT_SOURCE_PREFIX,
            type=non_empty,
            help=str(_("Key prefix of the seed's sessions (default %(default)r).")),
        )
        whose = parser.add_mutually_exclusive_group()
        whose.add_argument(
            "--owner", type=owner, help=str(_("Give every imported session this owner (e.g. user:42)."))
        )
        whose.add_argument(
            "--owner-from-metadata",
            metavar="KEY",
            type=non_empty,
            help=str(_("Take each session's owner from this key of its metadata (absent: unowned).")),
        )
        parser.add_argument(
            "--owner-template",
            default="{}",
            help=str(_("With --owner-from-metadata: the owner built from the value, e.g. 'user:{}'.")),
        )
        parser.add_argument(
            "--mapping",
            metavar="FILE",
            help=str(_("Write old_id,new_id of every imported source to this CSV file.")),
        )
        how = parser.add_mutually_exclusive_group()
        how.add_argument(
            "--dry-run", action="store_true", help=str(_("Read and check everything; write nothing."))
        )
        how.add_argument(
            "--delete-source",
            action="store_true",
            help=str(_("Delete each source key once its copy has been read back and verified.")),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with option_errors():
            import_options = ImportOptions(
                source_prefix=str(options["source_prefix"]),
                owner=options["owner"],
                owner_from_metadata=options["owner_from_metadata"],
                owner_template=str(options["owner_template"]),
                dry_run=bool(options["dry_run"]),
                delete_source=bool(options["delete_source"]),
            )
        mapping_file = None
        if options["mapping"]:
            try:
                # Opened first, so a bad path fails before anything is imported.
                mapping_file = open(options["mapping"], "w", newline="", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise CommandError(
                    _("Cannot write the mapping file %(path)s: %(error)s")
                    % {"path": options["mapping"], "error": exc.strerror}
                ) from exc
        store = get_store()
        try:
            with command_errors():
                result = import_seed_sessions(store, import_options, on_skip=self._skipped)
                rows = None
                if mapping_file is not None:
                    rows = write_mapping(store, import_options.source_prefix, mapping_file)
        finally:
            if mapping_file is not None:
                mapping_file.close()
        verb = _("Would import") if import_options.dry_run else _("Imported")
        lines = [
            _("%(verb)s %(n)s sessions (%(m)s messages) from %(s)s keys under %(prefix)r.")
            % {
                "verb": verb,
                "n": f"{result.imported:,}",
                "m": f"{result.messages:,}",
                "s": f"{result.scanned:,}",
                "prefix": import_options.source_prefix,
            },
            _("Already imported (left alone): %(n)s.") % {"n": f"{result.already_imported:,}"},
            _("Skipped: %(c)s corrupt, %(o)s beyond this site's limits, %(t)s not strings.")
            % {
                "c": f"{result.corrupt:,}",
                "o": f"{result.over_limits:,}",
                "t": f"{result.not_a_string:,}",
            },
        ]
        if result.unowned:
            lines.append(_("Without an owner (unowned): %(n)s.") % {"n": f"{result.unowned:,}"})
        if import_options.delete_source:
            lines.append(
                _("Sources deleted after verification: %(d)s; kept: %(k)s.")
                % {"d": f"{result.sources_deleted:,}", "k": f"{result.sources_kept:,}"}
            )
        if rows is not None:
            lines.append(_("Wrote %(n)s rows to %(path)s.") % {"n": f"{rows:,}", "path": options["mapping"]})
        if not import_options.dry_run:
            lines.append(_("The mapping is kept in the Redis hash %(key)s.") % {"key": mapping_key(store)})
        for line in lines:
            self.stdout.write(str(line))

    def _skipped(self, source_key: str, kind: str, reason: str) -> None:
        self.stderr.write(f"{kind}: {source_key}: {reason}")

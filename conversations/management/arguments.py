"""Option types the operator commands share, for argparse's ``type=``.

Each type reuses the app's own validator (``parse_duration``, ``owner_value``), so a value is refused for
the same reason and in the same words whether it comes from the command line or from Python. argparse
applies ``type=`` and ``choices=`` only to the command line; ``OptionTypesCommand`` applies them to the
string values ``call_command(..., top="5")`` hands through unparsed as well.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext_lazy as _

from conversations.exceptions import ConversationError
from conversations.management.errors import USAGE_ERROR
from conversations.operations.durations import parse_duration
from conversations.store.validation import owner_value

T = TypeVar("T")


def argument_type(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    """``parse`` as an argparse type: the app's ``ConversationError`` becomes argparse's usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ConversationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = name  # argparse names the type in its "invalid <name> value" message
    return convert


duration = argument_type(parse_duration, "duration")
owner = argument_type(owner_value, "owner")


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number within ``minimum..maximum``."""

    def convert(text: str) -> int:
        try:
            number = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(str(_("%r is not a whole number.") % (text,))) from None
        if number < minimum or (maximum is not None and number > maximum):
            if maximum is None:
                message = _("%(n)s is below the minimum, %(minimum)s.")
            else:
                message = _("%(n)s is outside %(minimum)s..%(maximum)s.")
            raise argparse.ArgumentTypeError(
                str(message % {"n": number, "minimum": minimum, "maximum": maximum})
            )
        return number

    convert.__name__ = "whole number"
    return convert


def non_empty(text: str) -> str:
    """An argparse type: any text but the empty string."""
    if not text:
        raise argparse.ArgumentTypeError(str(_("The value must not be empty.")))
    return text


class OptionTypesCommand(BaseCommand):
    """A command whose option types and choices hold for ``call_command`` keyword arguments too.

    ``call_command("conversations_report", top="many")`` passes ``"many"`` straight to ``handle()``
    (Django parses only the command line and required options); here such a string goes through the
    option's ``type=`` and ``choices=`` first, and is refused with the command line's message.
    """

    def execute(self, *args: Any, **options: Any) -> Any:
        parser = self.create_parser("manage.py", self._command_name())
        for action in parser._actions:
            value = options.get(action.dest)
            if value is None or not action.option_strings:
                continue
            flag = max(action.option_strings, key=len)
            if isinstance(value, str) and callable(action.type):
                try:
                    value = action.type(value)
                except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
                    raise CommandError(f"Error: argument {flag}: {exc}", returncode=USAGE_ERROR) from exc
            if action.choices is not None and value not in action.choices:
                choices = ", ".join(map(repr, action.choices))
                raise CommandError(
                    f"Error: argument {flag}: invalid choice: {value!r} (choose from {choices})",
                    returncode=USAGE_ERROR,
                )
            options[action.dest] = value
        return super().execute(*args, **options)

    def _command_name(self) -> str:
        return self.__module__.rsplit(".", 1)[-1]

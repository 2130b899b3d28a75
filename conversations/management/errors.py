"""What the operator commands share: how they fail, and with which exit status.

A command line the command refuses exits 2 (argparse's and Django's status for a usage error): nothing was
read or written. A command that ran and failed (Redis unreachable, a cancelled purge...) exits 1, as every
``CommandError`` does by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError

from conversations.exceptions import ConversationError

USAGE_ERROR = 2


@contextmanager
def command_errors() -> Iterator[None]:
    """Report a ``ConversationError`` (Redis unreachable...) as a ``CommandError``: exit status 1."""
    try:
        yield
    except ConversationError as exc:
        raise CommandError(str(exc)) from exc


@contextmanager
def option_errors() -> Iterator[None]:
    """Report a ``ConversationError`` raised while checking the options as a usage error: exit status 2."""
    try:
        yield
    except ConversationError as exc:
        message, field = str(exc), getattr(exc, "field", None)
        if field and field not in message:
            message = f"{field}: {message}"
        raise CommandError(message, returncode=USAGE_ERROR) from exc

"""What the operator commands share: the app's errors become ``CommandError`` (exit status 1)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError

from conversations.exceptions import ConversationError


@contextmanager
def command_errors() -> Iterator[None]:
    """Report a ``ConversationError`` (Redis unreachable, a bad option value...) as a ``CommandError``."""
    try:
        yield
    except ConversationError as exc:
        raise CommandError(str(exc)) from exc

"""Signals sent by the store after a write has been committed to Redis.

``session_created``  sender=ConversationStore, ``session`` (a ``Session``), ``owner``
``message_appended`` sender=ConversationStore, ``session_id``, ``message`` (a ``Message``), ``owner``
``session_deleted``  sender=ConversationStore, ``session_id``, ``owner``

An idempotent replay of an append does not send ``message_appended`` again.
"""

from __future__ import annotations

from django.dispatch import Signal

session_created = Signal()
message_appended = Signal()
session_deleted = Signal()

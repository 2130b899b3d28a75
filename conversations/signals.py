"""Signals sent by the store after a write has been committed to Redis.

``session_created``  sender=ConversationStore, ``session`` (a ``Session``), ``owner``
``message_appended`` sender=ConversationStore, ``session_id``, ``message`` (a ``Message``), ``owner``
``message_updated``  sender=ConversationStore, ``session_id``, ``message`` (as it now is), ``owner``
``messages_removed`` sender=ConversationStore, ``session_id``, ``message_ids`` (the ids removed; empty
                     for a truncation, which names ``after`` instead), ``after`` (or None), ``owner``
``session_deleted``  sender=ConversationStore, ``session_id``, ``owner``

An idempotent replay of an append does not send ``message_appended`` again. On the async path
(the store's ``a…`` methods) the signals are sent with ``Signal.asend``: coroutine receivers run on
the event loop, plain ones as Django runs them there.
"""

from __future__ import annotations

from django.dispatch import Signal

session_created = Signal()
message_appended = Signal()
message_updated = Signal()
messages_removed = Signal()
session_deleted = Signal()

"""The work behind the operator commands (``manage.py conversations_report``, ``conversations_purge``,
``conversations_import``), kept out of the commands so it can be called and tested on its own.

Everything here walks Redis with ``SCAN`` in batches and pipelined reads, holds a bounded amount of
state whatever the number of sessions, and raises ``conversations.exceptions`` errors (never
``CommandError``): the commands translate them.
"""

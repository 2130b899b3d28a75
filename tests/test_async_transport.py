"""The async transport's own path on a plain ``redis.asyncio`` client (a pooled connection, commands
packed and read by hand): what it must keep from redis-py's command path when calls are cancelled with
their replies on the way, and when the client's policy would retry a failed command.

Private redis-servers only (``private_cache``: 0.5 s socket timeouts); plain ``asyncio.run`` loops.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis
import redis.asyncio
from django.conf import settings as django_settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from conversations.clients import ASYNC_POOL_SIZE, get_async_redis_client
from conversations.exceptions import StoreUnavailable
from conversations.store import get_store
from tests.redis_server import PrivateRedis, half_written_sessions

pytestmark = pytest.mark.redis

OWNER = "user:transport"


def test_calls_cancelled_while_their_replies_are_on_the_way_leave_a_pool_that_reads_right(
    private_cache: PrivateRedis,
) -> None:
    """More reads than the loop's pool has connections are sent to a frozen Redis and cancelled: the
    first ones after sending (their replies come later, on their connections), the rest while waiting
    for a connection. Once Redis wakes, every connection still serves, and each call gets its own
    reply, never one left over from a cancelled call."""
    server = private_cache
    store = get_store()
    calls = ASYNC_POOL_SIZE + 50

    async def main() -> None:
        assert type(get_async_redis_client()) is redis.asyncio.Redis  # the transport's own path
        session = await store.acreate_session(owner=OWNER)
        made = await store.aappend_messages(
            session.id, [{"role": "user", "content": f"m{i}"} for i in range(calls)], owner=OWNER
        )
        # Open the pool's connections first, so the frozen server has received every read below.
        await asyncio.gather(*(store.aget_message(session.id, m.id, owner=OWNER) for m in made))
        server.stop_signal()
        try:
            pending = [asyncio.ensure_future(store.aget_message(session.id, m.id, owner=OWNER)) for m in made]
            await asyncio.sleep(0.2)  # sent and waiting for replies (well within the 0.5 s timeout)
            for task in pending:
                task.cancel()
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            # (A read that a very busy machine let reach its 0.5 s timeout first fails instead.)
            assert all(isinstance(o, asyncio.CancelledError | StoreUnavailable) for o in outcomes), outcomes
            assert sum(isinstance(o, asyncio.CancelledError) for o in outcomes) >= calls // 2
        finally:
            server.continue_signal()
        await asyncio.sleep(0.2)  # the cancelled reads' replies have arrived by now
        for _ in range(3):
            # Newest first: a stale reply would hand a call another message than the one it asked for.
            wanted = list(reversed(made))
            read = await asyncio.gather(*(store.aget_message(session.id, m.id, owner=OWNER) for m in wanted))
            assert [(m.id, m.content) for m in read] == [(m.id, m.content) for m in wanted]

    asyncio.run(main())
    assert half_written_sessions(server.admin(), store.keys.prefix) == []


def retrying_client(alias: str) -> redis.asyncio.Redis:
    """An ASYNC_CLIENT_FACTORY: a plain client for the alias's server whose policy retries every
    timeout and connection error 3 times."""
    return redis.asyncio.Redis.from_url(
        django_settings.CACHES[alias]["LOCATION"],
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 3),
        retry_on_error=[redis.TimeoutError, redis.ConnectionError],
    )


def test_a_write_is_never_sent_twice_while_reads_retry_as_the_client_would(
    settings: Any, private_cache: PrivateRedis
) -> None:
    """A client whose policy retries 3 times: an append that timed out on a frozen Redis fails at once,
    without a second try on a new connection (its script may have run: sending it again could append
    twice), and lands exactly once when Redis wakes; a read on a frozen Redis is tried again and
    answers once Redis wakes during its retries."""
    server = private_cache
    settings.CONVERSATIONS = {
        **settings.CONVERSATIONS,
        "ASYNC_CLIENT_FACTORY": "tests.test_async_transport.retrying_client",
    }
    store = get_store()
    admin = server.admin()

    def connections_opened() -> int:
        return int(admin.info("stats")["total_connections_received"])

    async def main() -> None:
        session = await store.acreate_session(owner=OWNER)
        first = await store.aappend_message(session.id, role="user", content="first", owner=OWNER)
        opened = connections_opened()
        server.stop_signal()
        try:
            with pytest.raises(StoreUnavailable) as failed:
                await store.aappend_message(session.id, role="user", content="once", owner=OWNER)
            assert isinstance(failed.value.__cause__, redis.TimeoutError)
        finally:
            server.continue_signal()
        # A retry would have connected again (the frozen server's kernel accepts connections).
        assert connections_opened() == opened
        messages = await store.aget_messages(session.id, owner=OWNER)
        assert [m.content for m in messages] == ["first", "once"]

        # The read's first try times out at 0.5 s; Redis wakes at 0.75 s, within the second of its
        # four tries (the last would end near 2 s).
        server.stop_signal()
        waking = threading.Timer(0.75, server.continue_signal)
        waking.start()
        try:
            read = await store.aget_message(session.id, first.id, owner=OWNER)
        finally:
            waking.join()
        assert read.content == "first"

    asyncio.run(main())
    admin.close()

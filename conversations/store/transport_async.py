"""The async transport: runs the same operations as ``transport_sync`` on a ``redis.asyncio`` client.

Nothing here hops to a thread. The client comes from a factory called for each operation, which
hands out the client of the running event loop (``conversations.clients.get_async_redis_client``:
one pool per loop, so ``asyncio.run`` twice, per-test loops and ``async_to_sync`` threads each get
their own).

On a plain ``redis.asyncio.Redis`` (what the store builds for django-redis's and Django's caches) steps
go out as ``transport_sync`` sends them: a connection taken from the client's pool with the pool's
public API, the commands packed by hand (hiredis when installed), the replies read straight back, the
connection released. That skips ``execute_command``'s layers, which cost more in Python than the round
trip. Anything else (Sentinel, a cluster, fakeredis, a custom client class, a single-connection client)
goes through the client's own command path.

Cancellation: a script is one command, so it either reached Redis (and ran whole) or did not. A call
cancelled (or failing) anywhere between taking a connection and reading its last reply disconnects that
connection before handing it back, as redis-py does: the next caller never reads a stale reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.asyncio.sentinel import SentinelConnectionPool

from .errors import UNAVAILABLE_ERRORS, translated
from .operations import check_acks
from .protocol import Commands, Emit, Operation, Run, Sleep
from .scripts import LuaScript
from .transport_sync import _POOL_TAKES_NO_COMMAND, _is_compile_error, _pack

logger = logging.getLogger("conversations")

T = TypeVar("T")


def _take_connection(pool: redis.asyncio.ConnectionPool, command: str) -> Awaitable[Any]:
    """A connected connection from ``pool``, to await (the one redis-py version switch here: 5.3
    deprecated naming a command, 5.0 requires it)."""
    if _POOL_TAKES_NO_COMMAND:
        return pool.get_connection()  # type: ignore[no-untyped-call,unused-ignore]
    return pool.get_connection(command)  # type: ignore[no-untyped-call,unused-ignore]  # pragma: no cover


def _own_pool(client: Any) -> redis.asyncio.ConnectionPool | None:
    """The pool to take connections from by hand: a plain ``redis.asyncio.Redis``'s, unless it holds a
    single connection or goes through Sentinel; None sends everything through the client."""
    if type(client) is not redis.asyncio.Redis or getattr(client, "single_connection_client", True):
        return None
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, redis.asyncio.ConnectionPool) and not isinstance(pool, SentinelConnectionPool):
        return pool
    return None


class AsyncTransport:
    """Runs operations on the running loop's async client, given by ``client_factory()``."""

    def __init__(
        self, client_factory: Callable[[], Any], *, replica_acks: int = 0, replica_ack_timeout_ms: int = 1000
    ) -> None:
        self.client_factory = client_factory
        self.replica_acks = replica_acks
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        # Redis < 7 refuses the ``#!lua`` line: run the scripts without it there.
        self._plain_scripts = False
        # The last client seen and its pool (or None): a loop's client is the same object call after
        # call. One tuple, replaced whole, so a thread running another loop never sees half of it.
        self._last: tuple[Any, redis.asyncio.ConnectionPool | None] = (None, None)

    def _pool(self, client: Any) -> redis.asyncio.ConnectionPool | None:
        last = self._last
        if last[0] is client:
            return last[1]
        pool = _own_pool(client)
        self._last = (client, pool)
        return pool

    # ---------------------------------------------------------------- driving an operation

    async def run(self, operation: Operation[T]) -> T:
        """Run ``operation`` to its end, one step at a time; redis-py errors become the store's."""
        client = self.client_factory()
        try:
            step = next(operation)
            while True:
                if type(step) is Run:
                    reply = await self.script(client, step.script, step.keys, step.args, write=step.write)
                elif type(step) is Commands:
                    reply = await self.commands(client, step)
                elif type(step) is Emit:
                    await step.signal.asend(**step.kwargs)
                    reply = None
                elif type(step) is Sleep:
                    await asyncio.sleep(step.seconds)
                    reply = None
                else:  # pragma: no cover
                    raise TypeError(f"Not a step: {step!r}")
                step = operation.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except redis.RedisError as exc:
            operation.close()
            error = translated(exc)
            if error is exc:
                raise
            raise error from exc

    # ---------------------------------------------------------------- steps

    async def script(
        self, client: Any, script: LuaScript, keys: Any, args: Any, *, write: bool = False
    ) -> Any:
        """EVALSHA the script, loading it first if this Redis lost it (a restart, a failover)."""
        if self._plain_scripts and script.plain is not None:
            script = script.plain
        if write and self.replica_acks:
            return await self._script_and_wait(client, script, keys, args)
        pool = self._pool(client)
        for attempt in range(4):
            command = ("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                if pool is not None:
                    return (await _send(pool, (command,), retry=not write))[0]
                return await client.execute_command(*command)
            except redis.exceptions.NoScriptError:
                if attempt == 3:
                    raise
                script = await self._load(client, script)
            except redis.ResponseError as exc:
                if script.plain is None or not _is_compile_error(exc):
                    raise
                self._plain_scripts = True
                script = script.plain
        raise AssertionError("unreachable")  # pragma: no cover

    async def _load(self, client: Any, script: LuaScript) -> LuaScript:
        try:
            await client.script_load(script.source)
        except redis.ResponseError as exc:
            if script.plain is None or not _is_compile_error(exc):
                raise
            self._plain_scripts = True
            script = script.plain
            await client.script_load(script.source)
        return script

    async def commands(self, client: Any, step: Commands) -> Any:
        try:
            pool = self._pool(client)
            if pool is not None:
                return await _send(pool, step.commands)
            if len(step.commands) == 1:
                return [await client.execute_command(*step.commands[0])]
            pipe = client.pipeline(transaction=False)
            for command in step.commands:
                pipe.execute_command(*command)
            return await pipe.execute()
        except (*UNAVAILABLE_ERRORS, redis.ResponseError) as exc:  # type: ignore[misc]
            if not step.best_effort:
                raise
            logger.warning("Could not update the owner index (%s): %s", step.commands[0][1], exc)
            return None

    async def _script_and_wait(self, client: Any, script: LuaScript, keys: Any, args: Any) -> Any:
        """The script and a WAIT in one pipeline (same connection, same round trip); see
        ``SyncTransport._script_and_wait``."""
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.replica_acks, self.replica_ack_timeout_ms)
            try:
                reply, confirmed = await pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                script = await self._load(client, script)
                continue
            check_acks(self.replica_acks, int(confirmed))
            return reply
        raise AssertionError("unreachable")  # pragma: no cover


async def _send(
    pool: redis.asyncio.ConnectionPool, commands: tuple[tuple[Any, ...], ...], *, retry: bool = True
) -> list[Any]:
    """Send ``commands`` in one round trip on a connection of ``pool``, packed and read by hand.

    Reads retry connection failures as the client's own commands do; a write script never does (its
    reply may have been lost after it ran: running it again could append twice). Any exception,
    cancellation included, disconnects the connection before it goes back to the pool, so a reply left
    unread never reaches the next caller.
    """
    conn = await _take_connection(pool, commands[0][0])
    try:
        packed = _pack(conn, commands)
        try:
            replies = await _exchange(conn, packed, len(commands))
        except Exception as error:
            if not retry:
                raise
            replies = await _retried(conn, packed, len(commands), error)
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
    return replies


async def _exchange(conn: Any, packed: Any, count: int) -> list[Any]:
    await conn.send_packed_command(packed)
    if count == 1:
        return [await conn.read_response()]
    return [await conn.read_response() for _ in range(count)]


async def _retried(conn: Any, packed: Any, count: int, error: Exception) -> list[Any]:
    """What the connection's retry policy makes of a first attempt that raised ``error``: the policy
    sees that attempt fail (and decides whether the error is one to retry, and how often), then makes
    the further attempts. The first attempt ran outside it, so a call that succeeds pays nothing."""
    first = [error]

    async def attempt() -> list[Any]:
        if first:
            raise first.pop()
        return await _exchange(conn, packed, count)

    async def failed(_error: Exception) -> None:
        await conn.disconnect()

    replies: list[Any] = await conn.retry.call_with_retry(attempt, failed)
    return replies

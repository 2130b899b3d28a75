"""The sync transport: runs an operation's steps on a redis-py client (the only sync code that does I/O).

On a plain ``redis.Redis`` (django-redis's client, or one over Sentinel) steps go out packed and read
by hand (``_send``): scripts and listings. That is much cheaper than redis-py's ``Pipeline`` or
``Script`` objects, which cost more in Python than the round trip. On a plain pool they go out on
connections the transport keeps (``_KeptConnections``, made from the pool's public recipe); on other
pools on a connection taken from the pool and handed back, whose only version switch (5.3 deprecated
naming a command there, 5.0 requires it) is kept in ``_take_connection``. Anything else (a cluster,
fakeredis, a custom client) goes through the client's own command path.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from .errors import UNAVAILABLE_ERRORS, translated
from .operations import check_acks
from .protocol import Commands, Emit, Operation, Run, Sleep
from .scripts import LuaScript

logger = logging.getLogger("conversations")

T = TypeVar("T")

_REDIS_VERSION = tuple(int(part) for part in redis.__version__.split(".")[:2] if part.isdigit())
_POOL_TAKES_NO_COMMAND = _REDIS_VERSION >= (5, 3)

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs a command in C; redis-py's own packer walks every argument in Python first
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is an optional extra
    _hiredis_pack = None


def _take_connection(pool: redis.ConnectionPool, command: str) -> Any:
    if _POOL_TAKES_NO_COMMAND:
        return pool.get_connection()
    return pool.get_connection(command)  # pragma: no cover - redis-py < 5.3


class _KeptConnections:
    """The connections the sync transports keep for one plain pool (see ``SyncTransport``).

    They are made from the pool's public recipe (``connection_class(**connection_kwargs)``), so they
    are outside its count and its limit: the pool keeps serving the site's cache as before. Idle ones
    wait in ``idle`` (``list.pop``/``append`` are atomic), so there are as many as the most store calls
    ever in flight at once. A forked child drops its parent's (redis-py closes a socket only in the
    process that opened it)."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.make: Callable[[], Any] = functools.partial(pool.connection_class, **pool.connection_kwargs)
        self.idle: list[Any] = []


_KEPT: weakref.WeakKeyDictionary[redis.ConnectionPool, _KeptConnections] = weakref.WeakKeyDictionary()


def _kept_connections(pool: redis.ConnectionPool) -> _KeptConnections | None:
    """The kept connections of ``pool``, if it is one whose connections may be kept: a plain pool (not
    a blocking or a Sentinel one, whose limits and master tracking act on every take and release)
    speaking RESP2 without client-side caching (whose pushes the pool sorts out as it hands a
    connection out)."""
    if not (
        type(pool) is redis.ConnectionPool
        and str(pool.connection_kwargs.get("protocol") or 2) == "2"
        and getattr(pool, "cache", None) is None
    ):
        return None
    kept = _KEPT.get(pool)
    if kept is None:
        kept = _KEPT.setdefault(pool, _KeptConnections(pool))
    return kept


def _forget_kept_connections() -> None:
    for kept in list(_KEPT.values()):
        kept.idle = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_kept_connections)


def _ready(conn: Any) -> None:
    """``conn``, connected and with nothing unread (the server may have closed it since its last
    use): the check redis-py's pool makes of every connection it hands out. A write needs it: sent on
    a connection the server has closed, it fails, and whether it ran cannot be told, so it is never
    sent again."""
    conn.connect()
    try:
        if conn.can_read():
            raise redis.ConnectionError("Connection has data")
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        conn.disconnect()
        conn.connect()
        if conn.can_read():
            raise redis.ConnectionError("Connection not ready") from None


def _pack(conn: Any, commands: tuple[tuple[Any, ...], ...]) -> Any:
    """The wire bytes of ``commands``: hiredis's packer where the connection encodes as UTF-8 (what it
    would do too), else the connection's own."""
    if _hiredis_pack is not None and conn.encoder.encoding == "utf-8":
        return [b"".join(_hiredis_pack(command) for command in commands)]
    return conn.pack_commands(commands)


def _is_compile_error(exc: redis.ResponseError) -> bool:
    """Whether Redis could not compile a script because of its ``#!lua`` line (Redis < 7, and
    fakeredis, which reports it only when the script runs)."""
    text = str(exc).lower()
    return "compil" in text or "shebang" in text or "near '#'" in text


class SyncTransport:
    """Runs operations on one sync client. ``replica_acks``: WAIT for that many replicas after writes.

    On a plain pool it runs steps on connections of its own (``_KeptConnections``) rather than
    taking one from the pool and handing it back for each: redis-py's take and release cost two
    system calls and more Python than the rest of a store call. Before a write, a kept connection
    gets the readiness check the pool gives each one it hands out; a read skips it (one more system
    call) and is sent again on a new connection if the server had closed that one.
    """

    def __init__(self, client: Any, *, replica_acks: int = 0, replica_ack_timeout_ms: int = 1000) -> None:
        self.client = client
        self.replica_acks = replica_acks
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        pool = getattr(client, "connection_pool", None)
        plain = type(client) is redis.Redis and getattr(client, "connection", None) is None
        self._pool = pool if plain and isinstance(pool, redis.ConnectionPool) else None
        self._kept = _kept_connections(self._pool) if self._pool is not None else None
        # Redis < 7 refuses the ``#!lua`` line: run the scripts without it there.
        self._plain_scripts = False

    # ---------------------------------------------------------------- driving an operation

    def run(self, operation: Operation[T]) -> T:
        """Run ``operation`` to its end, one step at a time; redis-py errors become the store's."""
        try:
            step = next(operation)
            while True:
                if type(step) is Run:
                    reply = self.script(step.script, step.keys, step.args, write=step.write)
                elif type(step) is Commands:
                    reply = self.commands(step)
                elif type(step) is Emit:
                    step.signal.send(**step.kwargs)
                    reply = None
                elif type(step) is Sleep:
                    time.sleep(step.seconds)
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

    def script(self, script: LuaScript, keys: Any, args: Any, *, write: bool = False) -> Any:
        """EVALSHA the script, loading it first if this Redis lost it (a restart, a failover)."""
        if self._plain_scripts and script.plain is not None:
            script = script.plain
        if write and self.replica_acks:
            return self._script_and_wait(script, keys, args)
        for attempt in range(4):
            try:
                return self._one(("EVALSHA", script.sha, len(keys), *keys, *args), retry=not write)
            except redis.exceptions.NoScriptError:
                if attempt == 3:
                    raise
                script = self._load(script)
            except redis.ResponseError as exc:
                if script.plain is None or not _is_compile_error(exc):
                    raise
                self._plain_scripts = True
                script = script.plain
        raise AssertionError("unreachable")  # pragma: no cover

    def _load(self, script: LuaScript) -> LuaScript:
        try:
            self.client.script_load(script.source)
        except redis.ResponseError as exc:
            if script.plain is None or not _is_compile_error(exc):
                raise
            self._plain_scripts = True
            script = script.plain
            self.client.script_load(script.source)
        return script

    def _one(self, command: tuple[Any, ...], *, retry: bool = True) -> Any:
        if self._pool is not None:
            return self._send((command,), retry=retry)[0]
        return self.client.execute_command(*command)

    def commands(self, step: Commands) -> Any:
        try:
            if self._pool is not None:
                return self._send(step.commands)
            pipe = self.client.pipeline(transaction=False)
            for command in step.commands:
                pipe.execute_command(*command)
            return pipe.execute()
        except (*UNAVAILABLE_ERRORS, redis.ResponseError) as exc:  # type: ignore[misc]
            if not step.best_effort:
                raise
            logger.warning("Could not update the owner index (%s): %s", step.commands[0][1], exc)
            return None

    def _script_and_wait(self, script: LuaScript, keys: Any, args: Any) -> Any:
        """The script and a WAIT in one pipeline (same connection, same round trip), so it waits for
        exactly this write. A write not confirmed in time raises ``StoreUnavailable``: it is on the
        primary but could be lost if the primary fails now (retry with an idempotency key)."""
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.replica_acks, self.replica_ack_timeout_ms)
            try:
                reply, confirmed = pipe.execute()
            except redis.exceptions.NoScriptError:
                # Not run at all (a restarted or new primary): load it and try once more.
                if attempt:
                    raise
                script = self._load(script)
                continue
            check_acks(self.replica_acks, int(confirmed))
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, commands: tuple[tuple[Any, ...], ...], *, retry: bool = True) -> list[Any]:
        """Send ``commands`` in one round trip on a kept (or pooled) connection, packed and read by hand.

        Reads retry connection failures as the client's own commands do; a write script never does
        (its reply may have been lost after it ran: running it again could append twice; the caller
        gets ``StoreUnavailable`` and retries with its idempotency key). An error drops the
        connection, so a half-read reply never reaches the next caller.
        """
        pool = self._pool
        assert pool is not None
        kept = self._kept
        # A read on a kept connection goes out unchecked: if the server closed the connection since
        # its last use, the read is simply sent again on a new one (a write cannot be: see _ready).
        resend_if_closed = False
        if kept is None:
            conn = _take_connection(pool, commands[0][0])
        else:
            try:
                conn = kept.idle.pop()
            except IndexError:
                conn = kept.make()
            else:
                resend_if_closed = retry
            if not retry:
                try:
                    _ready(conn)
                except BaseException:
                    kept.idle.append(conn)  # disconnected: the next call connects it anew
                    raise
        packed = _pack(conn, commands)

        def send() -> list[Any]:
            conn.send_packed_command(packed)
            return [conn.read_response() for _ in commands]  # an error reply raises

        try:
            if retry:
                try:
                    replies: list[Any] = conn.retry.call_with_retry(send, lambda _error: conn.disconnect())
                except redis.ConnectionError:
                    if not resend_if_closed:
                        raise
                    conn.disconnect()
                    replies = send()
            else:
                replies = send()
        except BaseException:
            conn.disconnect()  # replies may be left unread: never hand this connection on
            raise
        finally:
            if kept is None:
                pool.release(conn)
            else:
                kept.idle.append(conn)
        return replies

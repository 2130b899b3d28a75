"""The async transport: runs the same operations as ``transport_sync`` on a ``redis.asyncio`` client.

Nothing here hops to a thread. The client comes from a factory called for each operation, which
hands out the client of the running event loop (``conversations.clients.get_async_redis_client``:
one pool per loop, so ``asyncio.run`` twice, per-test loops and ``async_to_sync`` threads each get
their own).

Cancellation: a script is one command, so it either reached Redis (and ran whole) or did not; redis-py
drops a connection whose reply was not read when its task is cancelled, so the next caller never
reads a stale reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from .errors import UNAVAILABLE_ERRORS, translated
from .operations import check_acks
from .protocol import Commands, Emit, Operation, Run, Sleep
from .scripts import LuaScript
from .transport_sync import _is_compile_error

logger = logging.getLogger("conversations")

T = TypeVar("T")


class AsyncTransport:
    """Runs operations on the running loop's async client, given by ``client_factory()``."""

    def __init__(
        self, client_factory: Callable[[], Any], *, replica_acks: int = 0, replica_ack_timeout_ms: int = 1000
    ) -> None:
        self.client_factory = client_factory
        self.replica_acks = replica_acks
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        self._plain_scripts = False

    async def run(self, operation: Operation[T]) -> T:
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

    async def script(
        self, client: Any, script: LuaScript, keys: Any, args: Any, *, write: bool = False
    ) -> Any:
        if self._plain_scripts and script.plain is not None:
            script = script.plain
        if write and self.replica_acks:
            return await self._script_and_wait(client, script, keys, args)
        for attempt in range(4):
            try:
                return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
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

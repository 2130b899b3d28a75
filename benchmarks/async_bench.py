"""Async store calls (issue 11) beside a ``redis.asyncio`` GET on the same event loop and client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .store_bench import OWNER, Bench, app_undo_append, fill_app_session
from .timing import Timing, ainterleaved


def bench_async(bench: Bench) -> tuple[dict[str, Timing], float, float]:
    """Async append (at message 10) and last-20 (of 2,000) beside an async GET; then 100 concurrent
    tasks appending against 100 concurrent tasks GETting. Returns the timings and both rates."""
    return asyncio.run(_bench_async(bench))


async def _bench_async(bench: Bench) -> tuple[dict[str, Timing], float, float]:
    from conversations.clients import get_async_redis_client

    store, sizes = bench.store, bench.sizes
    client = get_async_redis_client()
    ref_key = f"{bench.prefix}:ref"

    async def ref() -> Any:
        return await client.get(ref_key)

    appended = fill_app_session(bench, 9)
    read = fill_app_session(bench, max(sizes.read_at[0], sizes.read_last))
    undo_sync = app_undo_append(bench, appended, 9)
    text = bench.text(10)
    last = sizes.read_last

    async def append() -> Any:
        return await store.aappend_message(appended, role="user", content=text, owner=OWNER)

    async def undo() -> None:
        undo_sync()

    async def window() -> Any:
        return await store.aget_messages(read, owner=OWNER, last=last)

    timings = await ainterleaved(
        {"append": append, "read": window},
        ref,
        reps=sizes.reps,
        rounds=sizes.rounds,
        after={"append": undo},
    )
    tasks = 100
    per_task = max(2, sizes.reps // 25)
    sessions = [store.create_session(owner=OWNER).id for _ in range(tasks)]

    async def appender(session_id: str) -> None:
        for _ in range(per_task):
            await store.aappend_message(session_id, role="user", content=text, owner=OWNER)

    async def getter() -> None:
        for _ in range(per_task):
            await client.get(ref_key)

    best_append = best_get = 0.0
    for _ in range(max(1, sizes.rounds // 3)):
        for kind in ("get", "append"):
            started = time.perf_counter()
            if kind == "get":
                await asyncio.gather(*(getter() for _ in range(tasks)))
            else:
                await asyncio.gather(*(appender(sid) for sid in sessions))
            rate = tasks * per_task / (time.perf_counter() - started)
            if kind == "get":
                best_get = max(best_get, rate)
            else:
                best_append = max(best_append, rate)
    await client.aclose()
    return timings, best_append, best_get

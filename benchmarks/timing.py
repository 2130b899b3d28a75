"""Timing on a shared, noisy machine: interleaved medians, several rounds, best round kept.

Every operation is timed *interleaved* with a reference round trip (a redis-py ``GET`` of a small key on
the same client): reference, operation, reference, operation... so both see the same load at the same
moment. Each round yields the median of each. The time reported is the best (lowest) of the rounds'
medians; the ratio is the median over rounds of each round's operation/reference ratio (both taken
side by side, so a busy moment of the shared machine inflates both). Garbage collection is paused
inside a round (as ``timeit`` does) and a few untimed warm-up calls run first.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """Best-of-rounds medians of an operation and of the reference timed beside it, in microseconds."""

    op_us: float
    ref_us: float
    rounds: list[tuple[float, float]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """The median over rounds of each round's op/ref ratio (both timed side by side)."""
        return statistics.median(op / ref for op, ref in self.rounds)


@dataclass
class Op:
    """An operation to time; ``after`` runs untimed after every call (e.g. to undo it)."""

    call: Callable[[], object]
    after: Callable[[], object] | None = None


def interleaved(
    ops: dict[str, Op], ref: Callable[[], object], *, reps: int, rounds: int, warmup: int = 20
) -> dict[str, Timing]:
    """Time every op beside ``ref``. The ops take turns round by round, so a burst of load on the
    shared machine spoils one round of several ops rather than every round of one."""
    for op in ops.values():
        for _ in range(min(warmup, reps)):
            op.call()
            if op.after is not None:
                op.after()
    per_round: dict[str, list[tuple[float, float]]] = {name: [] for name in ops}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, op in ops.items():
            call, after = op.call, op.after
            op_ns: list[int] = []
            ref_ns: list[int] = []
            gc.collect()
            gc.disable()
            try:
                for _ in range(reps):
                    t0 = clock()
                    ref()
                    t1 = clock()
                    call()
                    t2 = clock()
                    ref_ns.append(t1 - t0)
                    op_ns.append(t2 - t1)
                    if after is not None:
                        after()
            finally:
                gc.enable()
            per_round[name].append((statistics.median(op_ns) / 1000, statistics.median(ref_ns) / 1000))
    return {
        name: Timing(
            op_us=min(op for op, _ in results), ref_us=min(ref for _, ref in results), rounds=results
        )
        for name, results in per_round.items()
    }


def throughputs(
    workloads: dict[str, Callable[[int], object]], *, batch: int, rounds: int
) -> dict[str, float]:
    """Best-of-rounds operations per second of each ``workload(batch)``, the workloads taking turns
    within every round (after one untimed warm-up batch each)."""
    for run_batch in workloads.values():
        run_batch(max(1, batch // 10))
    best = dict.fromkeys(workloads, 0.0)
    for _ in range(rounds):
        for name, run_batch in workloads.items():
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                run_batch(batch)
                elapsed = time.perf_counter() - start
            finally:
                gc.enable()
            best[name] = max(best[name], batch / elapsed)
    return best


async def ainterleaved(
    ops: dict[str, Callable[[], Any]],
    ref: Callable[[], Any],
    *,
    reps: int,
    rounds: int,
    after: dict[str, Callable[[], Any]] | None = None,
    warmup: int = 20,
) -> dict[str, Timing]:
    """``interleaved`` for coroutines on the running loop: ``await ref()``, ``await op()``, timed each."""
    after = after or {}
    for name, op in ops.items():
        for _ in range(min(warmup, reps)):
            await op()
            if name in after:
                await after[name]()
    per_round: dict[str, list[tuple[float, float]]] = {name: [] for name in ops}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, op in ops.items():
            undo = after.get(name)
            op_ns: list[int] = []
            ref_ns: list[int] = []
            gc.collect()
            gc.disable()
            try:
                for _ in range(reps):
                    t0 = clock()
                    await ref()
                    t1 = clock()
                    await op()
                    t2 = clock()
                    ref_ns.append(t1 - t0)
                    op_ns.append(t2 - t1)
                    if undo is not None:
                        await undo()
            finally:
                gc.enable()
            per_round[name].append((statistics.median(op_ns) / 1000, statistics.median(ref_ns) / 1000))
    return {
        name: Timing(op_us=min(o for o, _ in r), ref_us=min(f for _, f in r), rounds=r)
        for name, r in per_round.items()
    }

"""The message lifecycle operations (issue 12) beside a GET, at message 10 and at message 5,000, and
``get_context`` picking a 20-message window out of 5,000 messages. Each write is undone untimed, so
every timed call does the same work."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .store_bench import OWNER, Bench, fill_app_session
from .timing import Op, Timing, interleaved


def _tail_restorer(bench: Bench, session_id: str, tail: int) -> Callable[[], None]:
    """Cheaper: put back the newest ``tail`` messages and the meta counters (for removals at the end)."""
    client, keys = bench.client, bench.store.keys
    meta, messages = keys.meta(session_id), keys.messages(session_id)
    members = dict(client.zrange(messages, -tail, -1, withscores=True))
    count, seq = client.hmget(meta, "count", "seq")

    def restore() -> None:
        pipe = client.pipeline(transaction=True)
        pipe.zadd(messages, members)
        pipe.hset(meta, mapping={"count": count, "seq": seq})
        pipe.execute()

    return restore


def bench_lifecycle(bench: Bench) -> dict[str, Timing]:
    """Keys: "<op> <n>" for each op at a session of n messages (the last one its target)."""
    store = bench.store
    ops: dict[str, Op] = {}
    for n in bench.sizes.lifecycle_at:
        sid = fill_app_session(bench, n - 1)
        last = store.append_message(
            sid, role="assistant", content="streaming", owner=OWNER, status="in_progress"
        )
        mid = last.id
        text = bench.text(n)
        batch = [{"role": "user", "content": bench.text(i)} for i in range(5)]

        def undo_append5(sid: str = sid, length: int = n) -> None:
            keys = store.keys
            pipe = bench.client.pipeline(transaction=True)
            pipe.zpopmax(keys.messages(sid), 5)
            pipe.hset(keys.meta(sid), mapping={"count": length, "seq": length})
            pipe.execute()

        tail = _tail_restorer(bench, sid, 1)
        ops[f"update_message {n}"] = Op(
            lambda sid=sid, mid=mid, text=text: store.update_message(sid, mid, owner=OWNER, content=text)
        )
        ops[f"extend_message {n}"] = Op(
            lambda sid=sid, mid=mid: store.extend_message(sid, mid, " more", owner=OWNER),
            lambda sid=sid, mid=mid: store.update_message(sid, mid, owner=OWNER, content="streaming"),
        )
        ops[f"get_message {n}"] = Op(lambda sid=sid, mid=mid: store.get_message(sid, mid, owner=OWNER))
        ops[f"delete_message {n}"] = Op(
            lambda sid=sid, mid=mid: store.delete_message(sid, mid, owner=OWNER), tail
        )
        ops[f"truncate_messages {n}"] = Op(
            lambda sid=sid, mid=mid: store.truncate_messages(sid, after=mid - 1, owner=OWNER), tail
        )
        ops[f"pop_message {n}"] = Op(lambda sid=sid: store.pop_message(sid, owner=OWNER), tail)
        ops[f"append_messages of 5 {n}"] = Op(
            lambda sid=sid, batch=batch: store.append_messages(sid, batch, owner=OWNER), undo_append5
        )
    big = max(bench.sizes.lifecycle_at)
    sid = fill_app_session(bench, big)
    # A 200-character message counts ceil(202 / 4) = 51 tokens (no token_count given): 20 of them fit.
    per = math.ceil((bench.sizes.content_chars + 2) / 4)
    window = bench.sizes.read_last
    budget = window * per + per // 2
    got = store.get_context(sid, max_tokens=budget, owner=OWNER)
    assert abs(len(got) - window) <= 1, f"get_context picked {len(got)} messages, not {window}"
    ops[f"get_context {big}"] = Op(lambda: store.get_context(sid, max_tokens=budget, owner=OWNER))
    return interleaved(ops, bench.ref, reps=bench.sizes.reps, rounds=max(3, bench.sizes.rounds // 2))


def messages_of(timings: dict[str, Any]) -> list[int]:
    return sorted({int(name.rsplit(" ", 1)[1]) for name in timings})

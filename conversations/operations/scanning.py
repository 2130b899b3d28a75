"""Walking Redis for the operator commands: ``SCAN`` in batches, the server's clock, error mapping,
and a progress line for terminals."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from django.utils.translation import gettext_lazy as _
from redis.cluster import RedisCluster

from conversations.exceptions import ConversationError
from conversations.store.codec import as_text
from conversations.store.errors import store_error

#: Keys asked for per SCAN call: large enough to keep round trips few, small enough that each call
#: holds Redis for well under a millisecond.
SCAN_COUNT = 1000

ProgressCallback = Callable[[float | None], None]

T = TypeVar("T")


text = as_text  # the store's own decoding of a Redis reply


def parse_int(value: bytes | str | None) -> int | None:
    """The integer in a Redis reply, or None if it is missing or not an integer."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn redis-py failures into the app's errors, the cause chained."""
    try:
        yield
    except redis.RedisError as exc:
        # The store's own translation (unreachable, out of memory, read-only...); anything else a
        # command meets is still a refusal the operator should read, not a traceback.
        error = store_error(exc)
        if error is None:
            raise ConversationError(str(_("Redis refused a command: %(error)s") % {"error": exc})) from exc
        raise error from exc


def server_time_ms(client: Any) -> int:
    """Now on the Redis server's clock, the one every stored timestamp was taken from."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def scan_batches(
    client: Any, pattern: str, *, count: int = SCAN_COUNT, progress: ProgressCallback | None = None
) -> Iterator[list[Any]]:
    """Keys matching ``pattern``, one SCAN reply at a time (never all of them at once).

    ``progress`` gets a rough fraction done: SCAN calls made x ``count`` / keys in the database (the
    server visits about ``count`` keys per call whatever ``MATCH`` keeps), or None when unknown.
    """
    if isinstance(client, RedisCluster):
        # A cluster client's scan_iter walks every primary in turn.
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=count):
            batch.append(key)
            if len(batch) >= count:
                yield batch
                batch = []
                if progress is not None:
                    progress(None)
        if batch:
            yield batch
        return
    total = max(int(client.dbsize()), 1)
    cursor: int = 0
    calls = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, match=pattern, count=count)
        calls += 1
        if keys:
            yield keys
        if progress is not None:
            progress(1.0 if cursor == 0 else min(calls * count / total, 0.99))
        if cursor == 0:
            return


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items``, each produced by a thread while the caller works on the one before.

    A walk that alternates a Redis call and Python work on its reply keeps one core busy at a time;
    with the next call in flight while the caller reads the last reply, Redis and the client run side
    by side (the thread waits on the socket without the GIL). At most two items are held ahead of
    the caller. An error in the thread is raised to the caller; a caller that stops early stops the
    thread after its current item.
    """
    ahead: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, item)):
                    return
        except BaseException as exc:  # handed to the caller, raised there
            offer((False, exc))
            return
        offer((False, None))

    thread = threading.Thread(target=produce, name="conversations-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            more, value = ahead.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()


class Progress:
    """A one-line progress bar, redrawn at most ten times a second; silent when disabled."""

    WIDTH = 30

    def __init__(self, write: Callable[[str], object], *, enabled: bool, label: str = "scanning") -> None:
        self.write = write
        self.enabled = enabled
        self.label = label
        self.fraction: float | None = 0.0
        self.items = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, fraction: float | None = None, *, items: int | None = None, force: bool = False) -> None:
        if fraction is not None:
            self.fraction = fraction
        if items is not None:
            self.items = items
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        elapsed = max(now - self._started, 1e-6)
        if self.fraction is None:
            bar = "?" * self.WIDTH
            percent = "  ?"
        else:
            filled = int(self.fraction * self.WIDTH)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            percent = f"{self.fraction * 100:3.0f}"
        line = f"\r{self.label} [{bar}] ~{percent}%  {self.items:,} sessions  {self.items / elapsed:,.0f}/s"
        self.write(line)
        self._drawn = True

    def finish(self) -> None:
        if self.enabled:
            self.update(1.0, force=True)
            if self._drawn:
                self.write("\n")

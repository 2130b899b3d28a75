"""Streaming statistics whose memory does not grow with the number of values seen.

* ``Distribution``: count, total, min and max exact; median and p95 from a log-linear histogram.
  Values below 128 are counted exactly; above, each bucket spans at most 1/64 of its lower bound, so a
  percentile read from it is within 0.8 % of a value actually seen (relative error <= 1/128). At most
  ~4,000 buckets exist for any 64-bit value, however many values are added.
* ``TopN``: the N largest items, a min-heap of size N.
* ``HeavyHitters``: the most frequent items with the space-saving algorithm (Metwally, Agrawal and
  El Abbadi, 2005) over ``capacity`` counters. While fewer distinct items than ``capacity`` have been
  seen every count is exact; after that each count may be too high by at most its ``error``, and
  every item seen more than ``total / capacity`` times is guaranteed to be in the table.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

_EXACT_BITS = 7  # values below 2**7 get a bucket of their own
_EXACT_LIMIT = 1 << _EXACT_BITS

K = TypeVar("K", bound=Hashable)


def _bucket_bounds(bucket: int) -> tuple[int, int]:
    if bucket < _EXACT_LIMIT:
        return bucket, bucket
    shift, top = bucket >> _EXACT_BITS, bucket & (_EXACT_LIMIT - 1)
    return top << shift, ((top + 1) << shift) - 1


class Distribution:
    """Summary of a stream of non-negative integers (negatives count as 0 in the percentiles)."""

    __slots__ = ("_buckets", "count", "maximum", "minimum", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.minimum: int | None = None
        self.maximum: int | None = None
        self._buckets: dict[int, int] = {}

    def add(self, value: int) -> None:
        self.count += 1
        self.total += value
        # Written out (no min()/max() calls): this runs several times per session scanned.
        if self.minimum is None or value < self.minimum:
            self.minimum = value
        if self.maximum is None or value > self.maximum:
            self.maximum = value
        if value < _EXACT_LIMIT:
            bucket = value if value > 0 else 0
        else:
            shift = value.bit_length() - _EXACT_BITS
            bucket = (shift << _EXACT_BITS) | (value >> shift)
        buckets = self._buckets
        buckets[bucket] = buckets.get(bucket, 0) + 1

    def add_many(self, values: list[int]) -> None:
        """``add`` each of ``values``: what the report calls once per batch of sessions (a call per
        value costs more than the bucketing; equal values, common in message counts, are bucketed once)."""
        if not values:
            return
        self.count += len(values)
        self.total += sum(values)
        low, high = min(values), max(values)
        if self.minimum is None or low < self.minimum:
            self.minimum = low
        if self.maximum is None or high > self.maximum:
            self.maximum = high
        buckets = self._buckets
        get = buckets.get
        for value, times in Counter(values).items():
            if value < _EXACT_LIMIT:
                bucket = value if value > 0 else 0
            else:
                shift = value.bit_length() - _EXACT_BITS
                bucket = (shift << _EXACT_BITS) | (value >> shift)
            buckets[bucket] = get(bucket, 0) + times

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    def percentile(self, fraction: float) -> int | None:
        """The value at rank ceil(fraction * count) (nearest-rank), or None when empty."""
        if not self.count or self.minimum is None or self.maximum is None:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                low, high = _bucket_bounds(bucket)
                middle = (low + high) // 2
                return min(max(middle, self.minimum), self.maximum)
        return self.maximum  # pragma: no cover - the ranks always add up to count

    def summary(self, scale: float = 1) -> dict[str, Any]:
        """min, median, p95, max and mean, each divided by ``scale`` (e.g. 1000 for ms -> s)."""

        def scaled(value: int | float | None) -> int | float | None:
            if value is None:
                return None
            if scale == 1:
                return value
            return round(value / scale, 3)

        mean = self.total / self.count if self.count else None
        return {
            "min": scaled(self.minimum),
            "median": scaled(self.percentile(0.5)),
            "p95": scaled(self.percentile(0.95)),
            "max": scaled(self.maximum),
            "mean": None if mean is None else round(mean / scale, 3),
        }


class TopN(Generic[K]):
    """The ``size`` entries with the largest score; ties broken by the larger key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[tuple[int, K, Any]] = []

    def add(self, score: int, key: K, payload: Any = None) -> None:
        if self.size <= 0:
            return
        item = (score, key, payload)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, item)
        elif (score, key) > self._heap[0][:2]:
            heapq.heapreplace(self._heap, item)

    def __len__(self) -> int:
        return len(self._heap)

    def largest(self) -> list[tuple[int, K, Any]]:
        return sorted(self._heap, key=lambda item: (item[0], item[1]), reverse=True)


class HeavyHitters(Generic[K]):
    """Approximate counts of the most frequent items in bounded memory (space-saving)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.total = 0
        self.evictions = 0
        self._counts: dict[K, list[int]] = {}  # item -> [count, error]
        # One entry per tracked item holding a count that may lag the real one (counts only grow),
        # refreshed lazily when it reaches the top: finding the minimum costs O(log capacity).
        self._heap: list[tuple[int, K]] = []

    def add(self, item: K) -> None:
        self.total += 1
        entry = self._counts.get(item)
        if entry is not None:
            entry[0] += 1
            return
        if len(self._counts) < self.capacity:
            self._counts[item] = [1, 0]
            heapq.heappush(self._heap, (1, item))
            return
        while True:
            stored, victim = self._heap[0]
            current = self._counts[victim][0]
            if current == stored:
                break
            heapq.heapreplace(self._heap, (current, victim))
        heapq.heappop(self._heap)
        del self._counts[victim]
        self.evictions += 1
        self._counts[item] = [stored + 1, stored]
        heapq.heappush(self._heap, (stored + 1, item))

    @property
    def exact(self) -> bool:
        """True while no counter has been evicted: every count is then the true one."""
        return self.evictions == 0

    def __len__(self) -> int:
        return len(self._counts)

    def most_common(self, n: int) -> list[tuple[K, int, int]]:
        """Up to ``n`` (item, count, error) by count, highest first; the true count is in
        ``[count - error, count]``."""
        ranked = heapq.nlargest(n, self._counts.items(), key=lambda kv: (kv[1][0], -kv[1][1]))
        return [(item, counts[0], counts[1]) for item, counts in ranked]

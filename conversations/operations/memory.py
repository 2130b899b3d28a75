"""Redis's memory settings and state, as operators need them: ``INFO memory``, read-only, one call.

The report warns from here about an evicting ``maxmemory-policy``; a site's health check can ask
whether Redis is refusing writes for memory (the example project's ``/health/`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from django.utils.translation import gettext_lazy as _

#: The only policy under which Redis never drops a key of this app on its own.
NO_EVICTION = "noeviction"


@dataclass(frozen=True, slots=True)
class MemoryState:
    """One server's memory as ``INFO memory`` reports it."""

    used_bytes: int
    max_bytes: int  # 0: no limit
    policy: str

    @property
    def writes_refused(self) -> bool:
        """Whether Redis refuses writes now: over ``maxmemory`` with nothing it may evict to make room."""
        return self.policy == NO_EVICTION and 0 < self.max_bytes < self.used_bytes


def _state(info: dict[str, Any]) -> MemoryState:
    # Redis compares maxmemory with used memory less its replication and AOF buffers.
    used = int(info.get("used_memory", 0)) - int(info.get("mem_not_counted_for_evict", 0))
    return MemoryState(used, int(info.get("maxmemory", 0)), str(info.get("maxmemory_policy", "")))


def memory_states(client: Any) -> list[MemoryState] | None:
    """Every server's memory (one on a single Redis or Sentinel, each primary's on a Cluster), or None
    when the server does not answer ``INFO`` (fakeredis; some managed services rename it) or cannot
    be reached: a figure for operators, never a reason to fail."""
    try:
        info = client.info("memory")
    except redis.RedisError:
        return None
    if "maxmemory_policy" in info:
        return [_state(info)]
    # A cluster client answers with one section per node.
    return [_state(node) for node in info.values() if isinstance(node, dict) and "maxmemory_policy" in node]


def eviction_warnings(client: Any) -> list[str]:
    """Warnings for an operator when Redis may evict this app's keys (``maxmemory-policy`` not
    ``noeviction``), or when the policy cannot be read."""
    states = memory_states(client)
    if states is None:
        return [str(_("Could not read Redis's maxmemory-policy (INFO failed); it should be noeviction."))]
    policies = sorted({state.policy for state in states if state.policy != NO_EVICTION})
    return [
        str(
            _(
                "Redis's maxmemory-policy is %(policy)s, not noeviction: once memory is full Redis may "
                "evict any key, so an evicted owner index hides that owner's sessions from listings and "
                "an evicted idempotency record lets a retried write apply twice. Set "
                "maxmemory-policy noeviction."
            )
            % {"policy": policy}
        )
        for policy in policies
    ]

"""Single Redis or Redis Cluster: the one place that knows how the owner index is kept on each.

On a single Redis every session script also updates the owner's index (and renews a create's
idempotency record), so one script does the whole write. On a Redis Cluster the index lives in another
slot than the session, so it is updated by a second call: added *before* a session is created and
removed *after* it is deleted, so a session is never missing from its index; entries whose session
has gone are pruned when a listing meets them, after a grace period that covers a create in flight.
"""

from __future__ import annotations

import time
from typing import Any

from .keys import KeyLayout
from .protocol import Commands

# How long a cluster-mode index entry may point at a session not yet written before a listing prunes it.
CLUSTER_INDEX_GRACE_MS = 10_000


class SingleRedis:
    cluster = False
    #: Events go out with PUBLISH.
    publish_mode = "p"
    #: Sessions (or index entries) one operator script looks at per call.
    groups_per_call = 100

    def __init__(self, keys: KeyLayout, ttl_ms: int) -> None:
        self.keys = keys
        self.ttl_ms = ttl_ms
        self.index_ttl_ms = ttl_ms

    def index_keys(self, owner: str) -> list[str]:
        """The owner index as an extra script key (only where one script may span slots)."""
        return [self.keys.owner_index(owner)]

    def owner_idempotency_prefix(self, owner: str) -> str:
        return self.keys.owner_idempotency_prefix(owner)

    def before_create(self, owner: str, session_id: str) -> Commands | None:
        return None

    def after_write(self, owner: str, session_id: str, score: int, cidem: Any) -> Commands | None:
        return None

    def after_create(self, owner: str, session_id: str, score: int) -> Commands | None:
        return None

    def after_delete(self, owner: str, session_id: str, cidem: Any) -> Commands | None:
        return None

    def prunable(self, score: int, now_ms: int | None = None) -> bool:
        """Whether an index entry whose session is gone may be dropped now."""
        return True


class ClusterRedis(SingleRedis):
    cluster = True
    publish_mode = "s"  # sharded pub/sub: the channel lives in the session's slot
    groups_per_call = 1  # a script may touch one slot only

    def __init__(self, keys: KeyLayout, ttl_ms: int) -> None:
        super().__init__(keys, ttl_ms)
        # The index outlives its newest session by the grace period: it is renewed just before
        # (create) or just after (every other write) the session, never in the same script.
        self.index_ttl_ms = ttl_ms + CLUSTER_INDEX_GRACE_MS

    def index_keys(self, owner: str) -> list[str]:
        return []

    def owner_idempotency_prefix(self, owner: str) -> str:
        return ""

    def before_create(self, owner: str, session_id: str) -> Commands | None:
        index = self.keys.owner_index(owner)
        return Commands(
            (("ZADD", index, int(time.time() * 1000), session_id), ("PEXPIRE", index, self.index_ttl_ms))
        )

    def after_write(self, owner: str, session_id: str, score: int, cidem: Any) -> Commands | None:
        """After a session write: bump its index entry (GT: of two racing writes, the later activity
        wins whichever lands last) and renew the index and the create's idempotency record.

        The write is done, so a failure here is logged, not raised (``best_effort``). The entry has
        existed since the create, so the worst outcomes are a stale score, or an index expiring before
        its session, which the session's next write or ``conversations_report --repair`` undoes.
        """
        index = self.keys.owner_index(owner)
        commands: list[tuple[Any, ...]] = [
            ("ZADD", index, "GT", score, session_id),
            ("PEXPIRE", index, self.index_ttl_ms),
        ]
        if cidem:
            commands.append(("PEXPIRE", self._create_record(owner, cidem), self.ttl_ms))
        return Commands(tuple(commands), best_effort=True)

    def after_create(self, owner: str, session_id: str, score: int) -> Commands | None:
        # The entry was scored on this machine's clock; listings order by Redis's, like ``updated_at``.
        # Nobody else knows the id yet, so no later activity can be undone.
        index = self.keys.owner_index(owner)
        return Commands((("ZADD", index, score, session_id),), best_effort=True)

    def after_delete(self, owner: str, session_id: str, cidem: Any) -> Commands | None:
        index = self.keys.owner_index(owner)
        if cidem:
            # Two slots: the index and the create record may live on different nodes.
            return Commands(
                (("ZREM", index, session_id), ("DEL", self._create_record(owner, cidem))), best_effort=True
            )
        return Commands((("ZREM", index, session_id),), best_effort=True)

    def _create_record(self, owner: str, cidem: Any) -> str:
        text = cidem.decode() if isinstance(cidem, bytes) else str(cidem)
        return self.keys.owner_idempotency(owner, text)

    def prunable(self, score: int, now_ms: int | None = None) -> bool:
        # A create adds the index entry before writing the session: give it time to land.
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return score < now - CLUSTER_INDEX_GRACE_MS


Topology = SingleRedis | ClusterRedis


def topology_for(client: Any, keys: KeyLayout, ttl_ms: int) -> SingleRedis:
    from redis.cluster import RedisCluster

    return (ClusterRedis if isinstance(client, RedisCluster) else SingleRedis)(keys, ttl_ms)

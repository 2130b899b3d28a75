"""The seed's approach, rebuilt for the benchmark only: what django-conversations replaced.

One JSON string per session (``<prefix>session:<id>``), read whole and written back whole (``GET``,
then ``SETEX`` sent as ``SET ... EX``) on every appended message; ``KEYS`` plus one ``GET`` per session
to list them; 8-hex-digit ids; the standard ``json`` module. It keeps the seed's behaviour, flaws
included (lost updates under concurrency, O(history) appends), because the point is to measure that
behaviour beside the app's in the same run. Never use it for anything else.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("benchmarks.seed")


@dataclass
class SeedMessage:
    role: str
    content: str
    timestamp: int
    sources: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SeedSession:
    session_id: str
    created_at: int
    updated_at: int
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: list[SeedMessage] = field(default_factory=list)


class SeedStore:
    """The seed's five methods on a redis-py client, keys under ``prefix``."""

    def __init__(self, client: Any, *, prefix: str = "session:", ttl: int = 1800) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl

    def key(self, session_id: str) -> str:
        return f"{self.prefix}{session_id}"

    @staticmethod
    def dumps(session: SeedSession) -> str:
        return json.dumps(
            {
                "session_id": session.session_id,
                "created_at": session.created_at,
                "updated_at": session.updated_at,
                "metadata": session.metadata,
                "messages": [
                    {"role": m.role, "content": m.content, "timestamp": m.timestamp, "sources": m.sources}
                    for m in session.messages
                ],
            },
            ensure_ascii=False,
        )

    @staticmethod
    def loads(raw: bytes | str) -> SeedSession:
        data = json.loads(raw)
        session = SeedSession(
            session_id=data["session_id"],
            created_at=data.get("created_at", 0),
            updated_at=data.get("updated_at", 0),
            metadata=data.get("metadata", {}),
        )
        session.messages = [
            SeedMessage(
                role=m["role"], content=m["content"], timestamp=m["timestamp"], sources=m.get("sources", [])
            )
            for m in data.get("messages", [])
        ]
        return session

    def _save(self, session: SeedSession) -> None:
        # SET ... EX is the seed's SETEX (same command cost); redis-py 8 deprecates ``setex()`` and its
        # warning machinery would slow the baseline down unfairly.
        self.client.set(self.key(session.session_id), self.dumps(session), ex=self.ttl)

    def create_session(self, metadata: dict[str, Any] | None = None) -> SeedSession:
        now = int(time.time())
        session = SeedSession(
            session_id=str(uuid.uuid4())[:8], created_at=now, updated_at=now, metadata=metadata or {}
        )
        self._save(session)
        return session

    def get_session(self, session_id: str) -> SeedSession | None:
        raw = self.client.get(self.key(session_id))
        if raw is None:
            return None
        try:
            return self.loads(raw)
        except (ValueError, KeyError, TypeError):
            logger.warning("Failed to deserialise session: %s", session_id)
            return None

    def save_message(
        self, session_id: str, *, role: str, content: str, sources: list[dict[str, Any]] | None = None
    ) -> SeedSession | None:
        session = self.get_session(session_id)
        if session is None:
            return None
        now = int(time.time())
        session.messages.append(SeedMessage(role=role, content=content, timestamp=now, sources=sources or []))
        session.updated_at = now
        self._save(session)
        return session

    def delete_session(self, session_id: str) -> bool:
        return bool(self.client.delete(self.key(session_id)))

    def list_sessions(self) -> list[dict[str, Any]]:
        result = []
        for key in self.client.keys(f"{self.prefix}*"):
            raw = self.client.get(key)
            if raw is None:
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            result.append(
                {
                    "session_id": data["session_id"],
                    "message_count": len(data.get("messages", [])),
                    "created_at": data.get("created_at", 0),
                    "updated_at": data.get("updated_at", 0),
                }
            )
        return result

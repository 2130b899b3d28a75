"""Names of every Redis key the store writes.

With ``KEY_PREFIX = "conversations"`` (``P``) and a session id ``S``::

    P:layout                    string  layout version of the keys below ("1")
    P:s:{S}:meta                hash    owner, title, metadata (JSON), created_at, updated_at (ms), count,
                                        and idem ("1") once the session has an idempotency hash
    P:s:{S}:msgs                list    one JSON object per message, oldest first; message id N is index N-1
    P:s:{S}:idem                hash    idempotency key digest -> "fingerprint id" of the first append
    P:o:{O}:sessions            zset    the owner's session ids, scored by last activity (ms)
    P:o:{O}:idem:{K}            string  idempotency key digest K of a session create -> "fingerprint id"

``O`` is a digest of the owner string ("-" for the unowned namespace), so no key is ever built from raw
input. A session's keys share the hash tag ``{S}``, so one Lua script may touch all of them even on a
Redis Cluster; an owner's keys share ``{O}``.
"""

from __future__ import annotations

import functools
import hashlib
import re

LAYOUT_VERSION = 1

#: A session id: 128 random bits, URL-safe base64 without padding (``secrets.token_urlsafe(16)``).
SESSION_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{22}\Z")

UNOWNED = ""


def digest(value: str | bytes) -> str:
    """A short, fixed-alphabet digest of untrusted text (or its UTF-8 bytes), fit for a key name."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class KeyLayout:
    """Builds key names. Callers validate session ids with ``SESSION_ID_RE`` before calling it."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def layout(self) -> str:
        return f"{self.prefix}:layout"

    def meta(self, session_id: str) -> str:
        return f"{self.prefix}:s:{{{session_id}}}:meta"

    def messages(self, session_id: str) -> str:
        return f"{self.prefix}:s:{{{session_id}}}:msgs"

    def idempotency(self, session_id: str) -> str:
        return f"{self.prefix}:s:{{{session_id}}}:idem"

    def session_keys(self, session_id: str) -> tuple[str, str, str]:
        return self.meta(session_id), self.messages(session_id), self.idempotency(session_id)

    @staticmethod
    @functools.lru_cache(maxsize=4096)  # every write names its owner's index: hash each owner once
    def owner_tag(owner: str) -> str:
        return "-" if owner == UNOWNED else digest(owner)

    def owner_index(self, owner: str) -> str:
        return f"{self.prefix}:o:{{{self.owner_tag(owner)}}}:sessions"

    def owner_idempotency(self, owner: str, key_digest: str) -> str:
        return f"{self.prefix}:o:{{{self.owner_tag(owner)}}}:idem:{key_digest}"

    def import_mapping(self) -> str:
        """Source key -> new session id of ``conversations_import`` (no TTL: it keeps re-runs idempotent)."""
        return f"{self.prefix}:import:seed"

    # Patterns for SCAN, used only by operator tools (never on a request path).
    def meta_pattern(self) -> str:
        return f"{self.prefix}:s:*:meta"

    def index_pattern(self) -> str:
        return f"{self.prefix}:o:*:sessions"

    def session_id_from_key(self, key: str) -> str | None:
        """The session id inside one of this layout's session keys, or None."""
        head = f"{self.prefix}:s:{{"
        if not key.startswith(head):
            return None
        end = key.find("}", len(head))
        session_id = key[len(head) : end] if end != -1 else ""
        return session_id if SESSION_ID_RE.match(session_id) else None

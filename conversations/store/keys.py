"""Names of every Redis key the store writes.

With ``KEY_PREFIX = "conversations"`` (``P``) and a session id ``S``::

    P:layout                    string  newest layout version written here ("2")
    P:s:{S}:meta                hash    owner, title, metadata (JSON), created_at, updated_at, expires_at
                                        (ms), count (messages held), seq (highest message id ever handed
                                        out), v (the session's layout, "2"), idem ("1") once the session
                                        has an idempotency hash, cidem (digest of its create's key)
    P:s:{S}:m                   zset    one message per member (its stored JSON), scored by message id
    P:s:{S}:idem                hash    idempotency key digest -> "fingerprint first-last" of the first append
    P:s:{S}:ev                  stream  the session's recent changes (capped), for live event streams;
                                        each change is also PUBLISHed on a channel of the same name
    P:o:{O}:sessions            zset    the owner's session ids, scored by last activity (ms)
    P:o:{O}:idem:{K}            string  idempotency key digest K of a session create -> "fingerprint id"

Layout 1 (before message ids could have gaps) kept messages in a list, ``P:s:{S}:msgs``, message id N
at index N-1, and had no ``v``, ``seq`` or ``expires_at``. A session of layout 1 is moved to layout 2
by the first call that meets it (one script, ``MIGRATE``), so none is ever stranded.

``O`` is a digest of the owner string ("-" for the unowned namespace), so no key is ever built from raw
input. A session's keys share the hash tag ``{S}``, so one Lua script may touch all of them even on a
Redis Cluster; an owner's keys share ``{O}``.
"""

from __future__ import annotations

import functools
import hashlib
import re

LAYOUT_VERSION = 2

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
        return f"{self.prefix}:s:{{{session_id}}}:m"

    def session_head(self) -> str:
        """What every session key starts with, before its id (``<prefix>:s:{``)."""
        return f"{self.prefix}:s:{{"

    def legacy_messages(self, session_id: str) -> str:
        """Layout 1's message list (see the module docstring)."""
        return f"{self.prefix}:s:{{{session_id}}}:msgs"

    def idempotency(self, session_id: str) -> str:
        return f"{self.prefix}:s:{{{session_id}}}:idem"

    def events(self, session_id: str) -> str:
        """The session's change stream, and the name of the channel its changes are published on."""
        return f"{self.prefix}:s:{{{session_id}}}:ev"

    def session_keys(self, session_id: str) -> tuple[str, str, str, str]:
        """The keys every write script takes first, in this order."""
        sid = session_id
        head = f"{self.prefix}:s:{{{sid}}}:"
        return head + "meta", head + "m", head + "idem", head + "ev"

    @staticmethod
    @functools.lru_cache(maxsize=4096)  # every write names its owner's index: hash each owner once
    def owner_tag(owner: str) -> str:
        return "-" if owner == UNOWNED else digest(owner)

    def owner_index(self, owner: str) -> str:
        return f"{self.prefix}:o:{{{self.owner_tag(owner)}}}:sessions"

    def owner_idempotency(self, owner: str, key_digest: str) -> str:
        return self.owner_idempotency_prefix(owner) + key_digest

    def owner_idempotency_prefix(self, owner: str) -> str:
        return f"{self.prefix}:o:{{{self.owner_tag(owner)}}}:idem:"

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

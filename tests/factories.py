"""Writers of test data for the operator commands' tests: sessions in the product's key layout,
written straight through pipelines (thousands per round trip), and keys in the seed store's shape."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson

from conversations.store import codec, new_session_id
from conversations.store.keys import KeyLayout

session_id = new_session_id  # tests name fresh ids through the factories


def put_session(
    pipe: Any,
    layout: KeyLayout,
    *,
    owner: str = "",
    created_at: int,
    updated_at: int,
    messages: int = 0,
    ttl_ms: int = 3_600_000,
    indexed: bool = True,
    sid: str | None = None,
    layout_version: int = 2,
) -> str:
    """Queue on ``pipe`` the commands that write one session exactly as the store lays it out
    (``layout_version=1``: as the store did before message ids could have gaps)."""
    sid = sid or session_id()
    meta = layout.meta(sid)
    fields: dict[str, Any] = {
        "owner": owner,
        "title": "",
        "metadata": "{}",
        "created_at": created_at,
        "updated_at": updated_at,
        "count": messages,
    }
    if layout_version == 2:
        fields.update(v="2", seq=messages)
    pipe.hset(meta, mapping=fields)
    pipe.pexpire(meta, ttl_ms)
    if messages and layout_version == 1:
        msgs = layout.legacy_messages(sid)
        pipe.rpush(
            msgs,
            *(
                orjson.dumps(
                    {
                        "id": n,
                        "created_at": created_at + n,
                        "role": "user",
                        "content": f"m{n}",
                        "sources": [],
                    }
                )
                for n in range(1, messages + 1)
            ),
        )
        pipe.pexpire(msgs, ttl_ms)
    elif messages:
        msgs = layout.messages(sid)
        pipe.zadd(
            msgs,
            {
                codec.stored_message(n, created_at + n, codec.message_body("user", f"m{n}")): n
                for n in range(1, messages + 1)
            },
        )
        pipe.pexpire(msgs, ttl_ms)
    if indexed:
        index = layout.owner_index(owner)
        pipe.zadd(index, {sid: updated_at})
        pipe.pexpire(index, ttl_ms)
    return sid


def seed_value(
    sid: str,
    *,
    created_at: int,
    updated_at: int,
    metadata: dict[str, Any] | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> str:
    """A session exactly as the seed store's ``_serialise`` wrote it (``json.dumps``, ensure_ascii off)."""
    return json.dumps(
        {
            "session_id": sid,
            "created_at": created_at,
            "updated_at": updated_at,
            "metadata": metadata or {},
            "messages": [
                {
                    "role": m["role"],
                    "content": m["content"],
                    "timestamp": m["timestamp"],
                    "sources": m.get("sources", []),
                }
                for m in messages or []
            ],
        },
        ensure_ascii=False,
    )


# KEYS: meta, msgs, index per session   ARGV: owner, created_at, updated_at, messages, ttl_ms, id per session
_BULK = """
for i = 1, #KEYS / 3 do
  local meta, msgs, index = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local a = 6 * (i - 1)
  local owner, created, updated, n, ttl, sid =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6]
  redis.call('HSET', meta, 'owner', owner, 'title', '', 'metadata', '{}', 'created_at', created,
             'updated_at', updated, 'count', n, 'seq', n, 'v', '2')
  redis.call('PEXPIRE', meta, ttl)
  for m = 1, n do
    redis.call('ZADD', msgs, m, string.format('{"id":%d,"created_at":%d,"role":"user","sources":[]\\n'
      .. ',"status":"completed"\\n,"token_count":null\\n,"data":{}\\n,"content":"m%d"}', m, created + m, m))
  end
  if n > 0 then redis.call('PEXPIRE', msgs, ttl) end
  redis.call('ZADD', index, updated, sid)
  redis.call('PEXPIRE', index, ttl)
end
"""


def put_sessions_bulk(
    client: Any, layout: KeyLayout, rows: list[tuple[str, int, int, int]], ttl_ms: int = 3_600_000
) -> None:
    """Write many indexed sessions fast: rows of (owner, created_at, updated_at, messages)."""
    script = client.register_script(_BULK)
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(rows), 500):
        keys: list[str] = []
        args: list[Any] = []
        for owner, created_at, updated_at, messages in rows[start : start + 500]:
            sid = session_id()
            keys += [layout.meta(sid), layout.messages(sid), layout.owner_index(owner)]
            args += [owner, created_at, updated_at, messages, ttl_ms, sid]
        script(keys=keys, args=args, client=pipe)
    pipe.execute()


def legacy_fingerprint(role: str, content: str, sources: list[dict[str, Any]] | None = None) -> str:
    """What layout 1's append recorded for an idempotency key: the digest of its message body."""
    from conversations.store.keys import digest

    body = b'"role":%b,"content":%b,"sources":%b}' % (
        orjson.dumps(role),
        orjson.dumps(content),
        orjson.dumps(sources or []),
    )
    return digest(body)


def put_legacy_session(
    client: Any,
    layout: KeyLayout,
    *,
    owner: str = "",
    messages: int = 3,
    ttl_ms: int = 3_600_000,
    idempotency: dict[str, tuple[str, int]] | None = None,
) -> str:
    """Write one session of layout 1 now (``put_session(..., layout_version=1)``), its messages
    ``m1``..``mN`` from ``user``; ``idempotency``: key -> (fingerprint, message id) recorded as layout 1
    did for an idempotent append."""
    from conversations.store.keys import digest

    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    sid = put_session(
        pipe,
        layout,
        owner=owner,
        created_at=now_ms - 60_000,
        updated_at=now_ms - 30_000,
        messages=messages,
        ttl_ms=ttl_ms,
        layout_version=1,
    )
    if idempotency:
        pipe.hset(
            layout.idempotency(sid),
            mapping={digest(key): f"{fp} {mid}" for key, (fp, mid) in idempotency.items()},
        )
        pipe.pexpire(layout.idempotency(sid), ttl_ms)
        pipe.hset(layout.meta(sid), "idem", "1")
    pipe.execute()
    return sid

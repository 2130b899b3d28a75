"""The store's operations, sans I/O: prepare (validate, build keys and arguments), one step, parse.

Each function here is a generator run by a transport (see ``protocol``): it yields ``Run`` /
``Commands`` / ``Sleep`` / ``Emit`` steps and gets their replies back. Nothing here touches a socket,
so the sync methods and their async twins share every line of it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from conversations import signals
from conversations.exceptions import (
    IdempotencyConflict,
    InvalidInput,
    MessageNotFound,
    MessageNotInProgress,
    SessionFull,
    SessionNotFound,
    StoreUnavailable,
)

from . import codec, scripts, validation
from .codec import as_text
from .keys import LAYOUT_VERSION, SESSION_ID_RE, KeyLayout, digest
from .protocol import Commands, Emit, Operation, Run, Sleep
from .records import Message, Session, SessionPage, SessionSummary
from .topology import SingleRedis

#: Sentinel for "leave this field unchanged".
UNSET: Any = object()

_CREATE_RETRIES = 5
#: Bytes of stored (UTF-8, JSON-escaped) content counted as one token when a message has no
#: ``token_count``: about what common tokenizers give for English text.
BYTES_PER_TOKEN = 4
#: The most messages ``get_context`` returns, whatever the budget.
MAX_CONTEXT_MESSAGES = 1000
#: The most events a reconnecting reader is sent from the stream in one call.
MAX_EVENTS_SINCE = 1000


def new_session_id() -> str:
    """128 random bits, URL-safe: not guessable, not sequential."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class Context:
    """What every operation needs to know, built once per store."""

    config: Any  # StoreConfig (service.py); typed loosely to keep this module free of the facade
    keys: KeyLayout
    topology: SingleRedis
    ttl_ms: int
    event_mode: str  # '' (events off), 'p' or 's'
    event_history: int


# --------------------------------------------------------------------------------- shared steps


def _head(ctx: Context, session_id: str, owner: str) -> list[Any]:
    """The ARGV every session write script begins with (see ``scripts``)."""
    return [
        owner,
        ctx.ttl_ms,
        session_id,
        ctx.event_mode,
        ctx.event_history,
        ctx.topology.owner_idempotency_prefix(owner),
    ]


def _write_keys(ctx: Context, session_id: str, owner: str) -> list[str]:
    return [*ctx.keys.session_keys(session_id), *ctx.topology.index_keys(owner)]


def _migrate(ctx: Context, session_id: str, owner: str) -> Operation[bool]:
    keys = ctx.keys
    done = yield Run(
        scripts.MIGRATE,
        [keys.meta(session_id), keys.messages(session_id), keys.legacy_messages(session_id)],
        [owner],
        write=True,
    )
    return bool(done)


def _is_legacy(reply: Any) -> bool:
    return reply == scripts.LEGACY or (
        isinstance(reply, list) and len(reply) == 1 and reply[0] == scripts.LEGACY
    )


def _run(ctx: Context, session_id: str, owner: str, step: Run) -> Operation[Any]:
    """Run a session script; a session of layout 1 is migrated first (once) and the script rerun."""
    reply = yield step
    if _is_legacy(reply):
        if not (yield from _migrate(ctx, session_id, owner)):
            # Gone meanwhile (or half-evicted): answer as the script does for a missing session.
            return [scripts.NOT_FOUND] if isinstance(reply, list) else None
        reply = yield step
    return reply


def _write(
    ctx: Context, session_id: str, owner: str, script: scripts.LuaScript, args: list[Any]
) -> Operation[Any]:
    """A session write script with the common head; the reply, after index upkeep on a cluster."""
    reply = yield from _run(
        ctx,
        session_id,
        owner,
        Run(script, _write_keys(ctx, session_id, owner), _head(ctx, session_id, owner) + args, write=True),
    )
    return reply


def _read_messages(
    ctx: Context, session_id: str, owner: str, script: scripts.LuaScript, args: list[Any]
) -> Operation[list[bytes]]:
    """Run a read script over the session's meta and messages (``owner`` first in ARGV); its raw
    messages, or ``SessionNotFound``."""
    keys = ctx.keys
    step = Run(script, [keys.meta(session_id), keys.messages(session_id)], [owner, *args])
    raws = yield from _run(ctx, session_id, owner, step)
    if raws is None:
        raise SessionNotFound(session_id)
    return list(raws)


def _after_write(ctx: Context, owner: str, session_id: str, now: Any, cidem: Any) -> Operation[None]:
    step = ctx.topology.after_write(owner, session_id, int(now), cidem)
    if step is not None:
        yield step


def _session_id(session_id: Any) -> str:
    if not validation.is_session_id(session_id):
        raise SessionNotFound(session_id)
    return str(session_id)


def _emit(signal: Any, **kwargs: Any) -> Emit | None:
    return Emit(signal, kwargs) if signal.receivers else None


def _decode_one(raw: Any, session_id: str) -> Message:
    message = codec.decode_message(raw, session_id)
    if message is None:
        raise MessageNotFound(session_id)
    return message


def _check_status(code: int, session_id: str, message_id: int | None = None) -> None:
    """Raise the error a session script's negative status stands for."""
    if code == scripts.NOT_FOUND:
        raise SessionNotFound(session_id)
    if code in (scripts.NO_MESSAGE, scripts.CORRUPT):
        raise MessageNotFound(f"{session_id}/{message_id}")
    if code == scripts.NOT_IN_PROGRESS:
        raise MessageNotInProgress("Only a message whose status is in_progress can be extended.")
    if code == scripts.TOO_LONG:
        raise InvalidInput("The content would exceed MAX_MESSAGE_LENGTH.", field="text")
    raise StoreUnavailable(f"Unexpected reply from Redis: {code}")  # pragma: no cover


# --------------------------------------------------------------------------------- sessions


def create_session(
    ctx: Context,
    metadata: dict[str, Any] | None,
    *,
    owner: str | None,
    title: str,
    idempotency_key: str | None,
    layout_written: list[bool],
    sender: Any,
) -> Operation[Session]:
    cfg = ctx.config
    owner_v = validation.owner_value(owner)
    title_v = validation.title_value(title, max_length=cfg.max_title_length)
    metadata_b = validation.metadata_bytes(
        metadata, max_bytes=cfg.max_metadata_bytes, max_depth=cfg.max_json_depth
    )
    session_id = new_session_id()
    key_digest = ""
    if idempotency_key is not None:
        key_digest = digest(validation.idempotency_key_value(idempotency_key))
        fingerprint = digest(title_v.encode("utf-8", "surrogatepass") + b"\x00" + metadata_b)
        prior = yield from _claim_create_key(ctx, owner_v, key_digest, fingerprint, session_id)
        if prior is not None:
            return prior
    yield from write_layout(ctx, layout_written)
    topology = ctx.topology
    created: Any = None
    for _ in range(_CREATE_RETRIES):
        before = topology.before_create(owner_v, session_id)
        if before is not None:
            yield before
        created = yield Run(
            scripts.CREATE,
            [ctx.keys.meta(session_id), *topology.index_keys(owner_v)],
            [owner_v, title_v, metadata_b, ctx.ttl_ms, session_id, key_digest],
            write=True,
        )
        if created is not None:
            after = topology.after_create(owner_v, session_id, int(created))
            if after is not None:
                yield after
            break
        # 128 random bits do not collide in practice; if they ever do, the live session is kept.
        session_id = new_session_id()  # pragma: no cover
    else:  # pragma: no cover
        raise StoreUnavailable("Could not allocate a fresh session id.")
    created_at = codec.from_millis(created)
    session = Session(
        id=session_id,
        owner=owner,
        title=title_v,
        metadata=codec.decode_metadata(metadata_b),
        created_at=created_at,
        updated_at=created_at,
        expires_at=created_at + timedelta(milliseconds=ctx.ttl_ms),
        message_count=0,
        messages=[],
    )
    emit = _emit(signals.session_created, sender=sender, session=session, owner=owner)
    if emit is not None:
        yield emit
    return session


def _claim_create_key(
    ctx: Context, owner: str, key_digest: str, fingerprint: str, session_id: str
) -> Operation[Session | None]:
    """Reserve an idempotency key for a create, or return the session an earlier call created."""
    redis_key = ctx.keys.owner_idempotency(owner, key_digest)
    for _ in range(20):
        claimed, raw = yield Commands(
            (("SET", redis_key, f"{fingerprint} {session_id}", "NX", "PX", ctx.ttl_ms), ("GET", redis_key))
        )
        if claimed:
            return None
        if raw is None:
            continue
        prior_fingerprint, _, prior_id = as_text(raw).partition(" ")
        if prior_fingerprint != fingerprint:
            raise IdempotencyConflict("This idempotency key was used with a different request.")
        session = yield from get_session(ctx, prior_id, owner=owner or None)
        if session is not None:
            yield from _confirm_replicated(ctx, redis_key)
            return session
        # The first call is still creating it, or its session is gone: wait briefly, then start over.
        yield Sleep(0.05)
        if (yield from _read(ctx, prior_id, owner, ("n", "", "", ""))) is None:
            yield Commands((("DEL", redis_key),))
    raise StoreUnavailable("Could not settle an idempotent create.")  # pragma: no cover


def write_layout(ctx: Context, layout_written: list[bool]) -> Operation[None]:
    """Mark the key layout's version (once per store): what a later layout would migrate from."""
    if not layout_written[0]:
        yield Commands((("SET", ctx.keys.layout(), LAYOUT_VERSION),))
        layout_written[0] = True


def _confirm_replicated(ctx: Context, key: str) -> Operation[None]:
    """With ``replica_acks``: before answering from data an earlier, unconfirmed call wrote, make a
    write of our own (renew ``key``'s TTL) and WAIT for it, which confirms everything before it."""
    cfg = ctx.config
    if not cfg.replica_acks:
        return
    _, confirmed = yield Commands(
        (("PEXPIRE", key, ctx.ttl_ms), ("WAIT", cfg.replica_acks, cfg.replica_ack_timeout_ms))
    )
    check_acks(cfg.replica_acks, int(confirmed))


def check_acks(wanted: int, confirmed: int) -> None:
    if confirmed < wanted:
        raise StoreUnavailable(
            f"Only {confirmed} of {wanted} replicas confirmed the write in time; "
            "it may be lost if the primary fails."
        )


def _read(
    ctx: Context, session_id: Any, owner: str, window: tuple[str, Any, Any, Any]
) -> Operation[tuple[list[Any], list[bytes]] | None]:
    """The READ script: (summary fields with the PTTL first, raw messages) or None when not found."""
    if not validation.is_session_id(session_id):
        return None
    keys = ctx.keys
    reply = yield from _run(
        ctx,
        session_id,
        owner,
        Run(scripts.READ, [keys.meta(session_id), keys.messages(session_id)], [owner, *window]),
    )
    if not reply:
        return None
    raws = reply[7] if len(reply) > 7 and reply[7] else []
    return reply[:7], raws


def _summary(
    session_id: str, owner: str, fields: list[Any], messages: list[Message] | None = None
) -> SessionSummary:
    return codec.summary_from_reply(
        session_id, owner, fields[1:7], int(fields[0]), time.time() * 1000, messages=messages
    )


def get_session(ctx: Context, session_id: str, *, owner: str | None) -> Operation[Session | None]:
    owner_v = validation.owner_value(owner)
    found = yield from _read(ctx, session_id, owner_v, ("a", "", "", ""))
    if found is None:
        return None
    fields, raws = found
    session = _summary(session_id, owner_v, fields, codec.decode_messages(raws, session_id))
    assert isinstance(session, Session)
    return session


def get_session_summary(ctx: Context, session_id: str, *, owner: str | None) -> Operation[SessionSummary]:
    owner_v = validation.owner_value(owner)
    found = yield from _read(ctx, session_id, owner_v, ("n", "", "", ""))
    if found is None:
        raise SessionNotFound(session_id)
    return _summary(session_id, owner_v, found[0])


def get_session_head(ctx: Context, session_id: str, *, owner: str | None, last: int) -> Operation[Session]:
    """The session with only its newest ``last`` messages (what the HTTP detail shows)."""
    owner_v = validation.owner_value(owner)
    last = validation.positive_int(last, field="last")
    found = yield from _read(ctx, session_id, owner_v, ("l", last, "", ""))
    if found is None:
        raise SessionNotFound(session_id)
    fields, raws = found
    session = _summary(session_id, owner_v, fields, codec.decode_messages(raws, session_id))
    assert isinstance(session, Session)
    return session


def count_messages(ctx: Context, session_id: str, *, owner: str | None) -> Operation[int]:
    summary = yield from get_session_summary(ctx, session_id, owner=owner)
    return summary.message_count


def delete_session(ctx: Context, session_id: str, *, owner: str | None, sender: Any) -> Operation[bool]:
    owner_v = validation.owner_value(owner)
    if not validation.is_session_id(session_id):
        return False
    keys = ctx.keys
    reply = yield Run(
        scripts.DELETE,
        [*keys.session_keys(session_id), keys.legacy_messages(session_id), *ctx.topology.index_keys(owner_v)],
        [owner_v, session_id, ctx.event_mode, ctx.topology.owner_idempotency_prefix(owner_v)],
        write=True,
    )
    if not reply or int(reply[0]) != 1:
        return False
    after = ctx.topology.after_delete(owner_v, session_id, reply[1] if len(reply) > 1 else None)
    if after is not None:
        yield after
    emit = _emit(signals.session_deleted, sender=sender, session_id=session_id, owner=owner)
    if emit is not None:
        yield emit
    return True


def update_session(
    ctx: Context, session_id: str, *, owner: str | None, title: Any, metadata: Any
) -> Operation[SessionSummary]:
    cfg = ctx.config
    owner_v = validation.owner_value(owner)
    set_title = title is not UNSET
    set_metadata = metadata is not UNSET
    title_v = validation.title_value(title, max_length=cfg.max_title_length) if set_title else ""
    metadata_b = (
        validation.metadata_bytes(metadata, max_bytes=cfg.max_metadata_bytes, max_depth=cfg.max_json_depth)
        if set_metadata
        else b""
    )
    session_id = _session_id(session_id)
    reply = yield from _write(
        ctx,
        session_id,
        owner_v,
        scripts.UPDATE,
        ["1" if set_title else "0", title_v, "1" if set_metadata else "0", metadata_b],
    )
    if not reply or (isinstance(reply[0], int) and reply[0] < 0 and len(reply) == 1):
        raise SessionNotFound(session_id)
    yield from _after_write(ctx, owner_v, session_id, reply[4], reply[7] if len(reply) > 7 else None)
    return _summary(session_id, owner_v, reply[:7])


#: Sessions one ``LIST_PAGE`` call returns while ``list_sessions`` walks a whole index.
LIST_CHUNK = 500
#: The most index entries one ``LIST_PAGE`` call reads (past that many gone ones it answers early).
LIST_BUDGET = 1000


def list_sessions_page(
    ctx: Context, *, owner: str | None, limit: int, cursor: str | None
) -> Operation[SessionPage]:
    owner_v = validation.owner_value(owner)
    limit = validation.positive_int(limit, field="limit", maximum=1000)
    max_score: int | str = "+inf"
    after_id = ""
    if cursor is not None:
        max_score, after_id = codec.decode_session_cursor(cursor)
    if ctx.topology.cluster:
        return (yield from _cluster_page(ctx, owner_v, limit, max_score, after_id))
    index = ctx.keys.owner_index(owner_v)
    found: list[SessionSummary] = []
    last: tuple[Any, Any] = (None, None)
    more: int = -1
    while more == -1:
        flat, more, score, max_score, after_id = yield from _list_step(
            ctx, index, owner_v, max_score, after_id, limit - len(found)
        )
        if flat:
            found += codec.listed_summaries(flat, owner_v, time.time() * 1000)
            last = (score, flat[-7])
    next_cursor = None
    if more == 1:
        next_cursor = codec.encode_session_cursor(_score(last[0]), as_text(last[1]))
    return SessionPage(sessions=found, next_cursor=next_cursor)


def list_sessions(ctx: Context, *, owner: str | None) -> Operation[list[SessionSummary]]:
    """Every live session of ``owner``, most recently active first: ``LIST_PAGE`` calls of
    ``LIST_CHUNK`` sessions on a single Redis, pages of as many on a cluster."""
    owner_v = validation.owner_value(owner)
    found: list[SessionSummary] = []
    max_score: int | str = "+inf"
    after_id = ""
    if ctx.topology.cluster:
        while True:
            page = yield from _cluster_page(ctx, owner_v, LIST_CHUNK, max_score, after_id)
            found += page.sessions
            if page.next_cursor is None:
                return found
            max_score, after_id = codec.decode_session_cursor(page.next_cursor)
    index = ctx.keys.owner_index(owner_v)
    more = -1
    while more:
        flat, more, _, max_score, after_id = yield from _list_step(
            ctx, index, owner_v, max_score, after_id, LIST_CHUNK
        )
        if flat:
            found += codec.listed_summaries(flat, owner_v, time.time() * 1000)
    return found


def _list_step(
    ctx: Context, index: str, owner: str, max_score: int | str, after_id: Any, want: int
) -> Operation[tuple[list[Any], int, Any, Any, Any]]:
    """One ``LIST_PAGE`` call (single Redis) and the pruning of the gone entries it met:
    (flat summaries, more, score of the last one, cursor score, cursor id)."""
    args = (owner, max_score, after_id, want, ctx.keys.session_head(), LIST_BUDGET)
    flat, gone, more, score, cursor_score, cursor_id = yield Run(scripts.LIST_PAGE, (index,), args)
    if gone:
        yield from _prune_index(ctx, index, [(as_text(session_id), 0) for session_id in gone])
    return flat, int(more), score, cursor_score, cursor_id


def _cluster_page(
    ctx: Context, owner_v: str, limit: int, max_score: int | str, after_id: str
) -> Operation[SessionPage]:
    """A page on a Redis Cluster, where one script may touch one slot only: index pages
    (``INDEX_PAGE``), then their sessions' summaries by plain commands."""
    index = ctx.keys.owner_index(owner_v)
    found: list[tuple[SessionSummary, int]] = []
    batch = limit + 1
    while len(found) <= limit:
        entries = yield Run(scripts.INDEX_PAGE, (index,), (max_score, after_id, batch))
        pairs = codec.score_pairs(entries)
        candidates = [
            (session_id, _score(raw_score))
            for raw_id, raw_score in pairs
            if SESSION_ID_RE.match(session_id := as_text(raw_id))
        ]
        summaries = yield from _summaries_by_commands(ctx, [sid for sid, _ in candidates], owner_v)
        stale = []
        for (session_id, score), summary in zip(candidates, summaries, strict=True):
            if summary is None:
                stale.append((session_id, score))
            else:
                found.append((summary, score))
        yield from _prune_index(ctx, index, stale)
        if len(pairs) < batch:
            break
        # The next batch starts after the last entry read (found or not).
        max_score, after_id = _score(pairs[-1][1]), as_text(pairs[-1][0])
    if len(found) > limit:
        last_summary, last_score = found[limit - 1]
        return SessionPage(
            sessions=[s for s, _ in found[:limit]],
            next_cursor=codec.encode_session_cursor(last_score, last_summary.id),
        )
    return SessionPage(sessions=[s for s, _ in found], next_cursor=None)


def _score(raw: Any) -> int:
    """An index score (integer milliseconds) from its reply."""
    try:
        return int(raw)
    except ValueError:
        return int(float(raw))


_SUMMARY_WANTED = ("owner", *codec.SUMMARY_FIELDS)


def _summaries_by_commands(
    ctx: Context, session_ids: list[str], owner: str
) -> Operation[list[SessionSummary | None]]:
    """On a Redis Cluster: the reads of ``LIST_PAGE``'s summaries as plain commands, in one packed
    round trip."""
    keys = ctx.keys
    commands: list[tuple[Any, ...]] = []
    for session_id in session_ids:
        meta = keys.meta(session_id)
        commands += [
            ("HMGET", meta, *_SUMMARY_WANTED, "v"),
            ("PTTL", meta),
            ("ZCARD", keys.messages(session_id)),
            ("LLEN", keys.legacy_messages(session_id)),
        ]
    replies = yield Commands(tuple(commands))
    now_ms = time.time() * 1000
    summaries: list[SessionSummary | None] = []
    for i, session_id in enumerate(session_ids):
        fields, pttl, card, legacy_length = replies[4 * i : 4 * i + 4]
        length = card if fields[7] is not None else legacy_length
        # A message set smaller than ``count`` means an evicting Redis dropped it: gone, as the scripts say.
        if fields[0] is None or as_text(fields[0]) != owner or as_text(fields[5]) != str(length):
            summaries.append(None)
            continue
        summaries.append(codec.summary_from_reply(session_id, owner, fields[1:7], int(pttl), now_ms))
    return summaries


def _prune_index(ctx: Context, index: str, stale: list[tuple[str, int]]) -> Operation[int]:
    """Drop index entries whose session is gone; returns how many were dropped."""
    now_ms = int(time.time() * 1000)
    gone = [sid for sid, score in stale if ctx.topology.prunable(score, now_ms)]
    if not gone:
        return 0
    (removed,) = yield Commands((("ZREM", index, *gone),))
    return int(removed)


def delete_owner_sessions(ctx: Context, owner: str | None, *, sender: Any) -> Operation[int]:
    owner_v = validation.owner_value(owner)
    index = ctx.keys.owner_index(owner_v)
    deleted = 0
    kept = 0  # entries left in place on purpose; they stay at the head of the index
    while True:
        (entries,) = yield Commands((("ZRANGE", index, kept, kept + 199, "WITHSCORES"),))
        if not entries:
            return deleted
        now_ms = int(time.time() * 1000)
        gone = []
        for raw_id, raw_score in codec.score_pairs(entries):
            session_id = as_text(raw_id)
            if SESSION_ID_RE.match(session_id) and (
                yield from delete_session(ctx, session_id, owner=owner, sender=sender)
            ):
                deleted += 1
            elif not ctx.topology.prunable(int(float(raw_score)), now_ms):
                # A create in flight lists its session just before writing it: dropping the entry
                # now would leave that session unlisted. It was not there to erase; leave it be.
                kept += 1
            else:
                gone.append(session_id)
        # Never DEL the whole index: a session created meanwhile must stay listed.
        if gone:
            yield Commands((("ZREM", index, *gone),))


# --------------------------------------------------------------------------------- messages


def _body(
    ctx: Context,
    role: Any,
    content: Any,
    sources: Any,
    status: Any,
    data: Any,
    token_count: Any,
    prefix: str = "",
) -> tuple[bytes, tuple[Any, ...]]:
    """One message's stored body from its fields, validated (see ``codec.message_body``), and the
    values it holds: (role, content, sources, status, data, token_count)."""
    cfg = ctx.config
    role = validation.role_value(role, roles=cfg.roles, field=prefix + "role")
    status = (
        "completed" if status == "completed" else validation.status_value(status, field=prefix + "status")
    )
    content = validation.content_value(content, max_length=cfg.max_message_length, field=prefix + "content")
    # (Most messages have no sources and no data: skip the calls, whose answers for None are fixed.)
    if sources is None:
        sources_b, sources_v = b"[]", []
    else:
        sources_b = validation.sources_bytes(
            sources,
            max_sources=cfg.max_sources,
            max_bytes=cfg.max_sources_bytes,
            max_depth=cfg.max_json_depth,
            field=prefix + "sources",
        )
        sources_v = orjson.loads(sources_b)  # a copy, as it will read back
    if data is None:
        data_b, data_v = b"{}", {}
    else:
        data_b = validation.data_bytes(
            data, max_bytes=cfg.max_message_data_bytes, max_depth=cfg.max_json_depth, field=prefix + "data"
        )
        data_v = orjson.loads(data_b)
    if token_count is not None:
        token_count = validation.token_count_value(token_count, field=prefix + "token_count")
    body = codec.message_body(
        role, content, sources_b=sources_b, status=status, token_count=token_count, data_b=data_b
    )
    return body, (role, content, sources_v, status, data_v, token_count)


def _legacy_fingerprint(values: tuple[Any, ...]) -> str:
    """What layout 1's append recorded for an idempotency key with this message (it knew only role,
    content and sources), or "" for a message layout 1 could not have written. Its records outlive
    the migration, so a client retrying across an upgrade still gets its first message back."""
    role, content, sources, status, data, token_count = values
    if status != "completed" or data or token_count is not None:
        return ""
    body = b'"role":%b,"content":%b,"sources":%b}' % (
        orjson.dumps(role),
        orjson.dumps(content),
        orjson.dumps(sources),
    )
    return digest(body)


_MESSAGE_FIELDS = frozenset({"role", "content", "sources", "status", "data", "token_count"})


def append_messages(
    ctx: Context,
    session_id: str,
    specs: Iterable[Mapping[str, Any]],
    *,
    owner: str | None,
    idempotency_key: str | None,
    sender: Any,
) -> Operation[list[Message]]:
    """A batch's field errors name the message (``messages[0].role``), even for a batch of one;
    ``append_message``'s name the bare field (``role``)."""
    owner_v = validation.owner_value(owner)
    bodies, values = _message_batch(ctx, specs)
    return (
        yield from _append(ctx, session_id, owner_v, owner, bodies, values, idempotency_key, False, sender)
    )


def _append(
    ctx: Context,
    session_id: str,
    owner_v: str,
    owner: str | None,
    bodies: list[bytes],
    values: list[tuple[Any, ...]],
    idempotency_key: str | None,
    single: bool,
    sender: Any,
) -> Operation[list[Message]]:
    """The APPEND script over validated message bodies, and its reply as the stored messages.
    ``single``: ``append_message``'s one message, which layout 1 may have fingerprinted too."""
    cfg = ctx.config
    key_digest = fingerprint = legacy_fingerprint = ""
    if idempotency_key is not None:
        key_digest = digest(validation.idempotency_key_value(idempotency_key))
        fingerprint = digest(b"\x00".join(bodies))
        if single:
            legacy_fingerprint = _legacy_fingerprint(values[0])
    session_id = _session_id(session_id)
    reply = yield from _write(
        ctx,
        session_id,
        owner_v,
        scripts.APPEND,
        [cfg.max_messages, key_digest, fingerprint, len(bodies), *bodies, legacy_fingerprint],
    )
    status = reply[0]
    if status > 0:
        yield from _after_write(ctx, owner_v, session_id, reply[1], reply[2])
        return (yield from _appended(session_id, owner, values, status, reply[1], sender))
    if status == scripts.REPLAYED:
        return codec.decode_messages(reply[1], session_id)
    if status == scripts.FULL:
        raise SessionFull(f"This session already holds {cfg.max_messages} messages.")
    if status == scripts.KEY_REUSED:
        raise IdempotencyConflict("This idempotency key was used with a different message.")
    if status == scripts.IDEMPOTENT_GONE:
        raise IdempotencyConflict(
            "The message this idempotency key appended has since been removed; use a new key to append again."
        )
    _check_status(status, session_id)
    raise AssertionError("unreachable")  # pragma: no cover


def append_message(
    ctx: Context,
    session_id: str,
    *,
    role: str,
    content: str,
    sources: list[dict[str, Any]] | None,
    owner: str | None,
    idempotency_key: str | None,
    status: str,
    data: dict[str, Any] | None,
    token_count: int | None,
    sender: Any,
) -> Operation[Message]:
    # The hottest path: straight to the body, without the batch's checks of a list of mappings.
    owner_v = validation.owner_value(owner)
    body, fields = _body(ctx, role, content, sources, status, data, token_count)
    messages = yield from _append(
        ctx, session_id, owner_v, owner, [body], [fields], idempotency_key, True, sender
    )
    return messages[0]


def get_messages(
    ctx: Context,
    session_id: str,
    *,
    owner: str | None,
    last: int | None,
    after: int | None,
    before: int | None,
    limit: int,
) -> Operation[list[Message]]:
    owner_v = validation.owner_value(owner)
    limit = validation.positive_int(limit, field="limit")
    if last is not None:
        window: tuple[str, Any, Any, Any] = ("l", validation.positive_int(last, field="last"), "", "")
    elif before is None:
        low = 0 if after is None else validation.position(after, field="after")
        window = ("f", low, "", limit)
    else:
        low = 0 if after is None else validation.position(after, field="after")
        window = ("b", validation.position(before, field="before"), low, limit)
    session_id = _session_id(session_id)
    raws = yield from _read_messages(ctx, session_id, owner_v, scripts.WINDOW, list(window))
    if window[0] == "b":
        raws = raws[::-1]
    return codec.decode_messages(raws, session_id)


def get_message(ctx: Context, session_id: str, message_id: int, *, owner: str | None) -> Operation[Message]:
    owner_v = validation.owner_value(owner)
    message_id = validation.message_id(message_id)
    session_id = _session_id(session_id)
    raws = yield from _read_messages(ctx, session_id, owner_v, scripts.WINDOW, ["i", message_id, "", ""])
    if not raws:
        raise MessageNotFound(f"{session_id}/{message_id}")
    return _decode_one(raws[0], session_id)


def _changed(
    ctx: Context, session_id: str, owner_v: str, owner: str | None, reply: Any, message_id: int, sender: Any
) -> Operation[Message]:
    if reply[0] != 1:
        _check_status(reply[0], session_id, message_id)
    yield from _after_write(ctx, owner_v, session_id, reply[3], reply[2])
    message = _decode_one(reply[1], session_id)
    emit = _emit(signals.message_updated, sender=sender, session_id=session_id, message=message, owner=owner)
    if emit is not None:
        yield emit
    return message


def update_message(
    ctx: Context,
    session_id: str,
    message_id: int,
    *,
    owner: str | None,
    content: Any,
    status: Any,
    data: Any,
    token_count: Any,
    sender: Any,
) -> Operation[Message]:
    cfg = ctx.config
    owner_v = validation.owner_value(owner)
    message_id = validation.message_id(message_id)
    segments = [
        b"" if status is UNSET else codec.status_segment(validation.status_value(status)),
        b"" if token_count is UNSET else codec.token_count_segment(validation.token_count_value(token_count)),
        b""
        if data is UNSET
        else codec.data_segment(
            validation.data_bytes(data, max_bytes=cfg.max_message_data_bytes, max_depth=cfg.max_json_depth)
        ),
        b""
        if content is UNSET
        else codec.content_segment(validation.content_value(content, max_length=cfg.max_message_length)),
    ]
    session_id = _session_id(session_id)
    reply = yield from _write(ctx, session_id, owner_v, scripts.UPDATE_MESSAGE, [message_id, *segments])
    return (yield from _changed(ctx, session_id, owner_v, owner, reply, message_id, sender))


def extend_message(
    ctx: Context, session_id: str, message_id: int, text: Any, *, owner: str | None, sender: Any
) -> Operation[Message]:
    cfg = ctx.config
    owner_v = validation.owner_value(owner)
    message_id = validation.message_id(message_id)
    text_v = validation.content_value(text, max_length=cfg.max_message_length, field="text")
    session_id = _session_id(session_id)
    reply = yield from _write(
        ctx,
        session_id,
        owner_v,
        scripts.EXTEND_MESSAGE,
        [message_id, codec.content_delta(text_v), cfg.max_message_length, len(text_v)],
    )
    return (yield from _changed(ctx, session_id, owner_v, owner, reply, message_id, sender))


def _removed(
    ctx: Context,
    session_id: str,
    owner_v: str,
    owner: str | None,
    ids: list[int],
    now: Any,
    cidem: Any,
    sender: Any,
    after: int | None = None,
) -> Operation[None]:
    yield from _after_write(ctx, owner_v, session_id, now, cidem)
    emit = _emit(
        signals.messages_removed,
        sender=sender,
        session_id=session_id,
        message_ids=ids,
        after=after,
        owner=owner,
    )
    if emit is not None:
        yield emit


def delete_message(
    ctx: Context, session_id: str, message_id: int, *, owner: str | None, sender: Any
) -> Operation[bool]:
    owner_v = validation.owner_value(owner)
    message_id = validation.message_id(message_id)
    session_id = _session_id(session_id)
    reply = yield from _write(ctx, session_id, owner_v, scripts.DELETE_MESSAGE, [message_id])
    if reply[0] == scripts.NO_MESSAGE:
        return False
    if reply[0] != 1:
        _check_status(reply[0], session_id, message_id)
    yield from _removed(ctx, session_id, owner_v, owner, [message_id], reply[2], reply[1], sender)
    return True


def truncate_messages(
    ctx: Context, session_id: str, *, after: int, owner: str | None, sender: Any
) -> Operation[int]:
    owner_v = validation.owner_value(owner)
    after = validation.position(after, field="after")
    session_id = _session_id(session_id)
    reply = yield from _write(ctx, session_id, owner_v, scripts.TRUNCATE, [after])
    removed = int(reply[0])
    if removed < 0:
        _check_status(removed, session_id)
    if removed:
        yield from _removed(ctx, session_id, owner_v, owner, [], reply[2], reply[1], sender, after=after)
    else:
        yield from _after_write(ctx, owner_v, session_id, reply[2], reply[1])
    return removed


def pop_message(
    ctx: Context, session_id: str, *, owner: str | None, sender: Any
) -> Operation[Message | None]:
    owner_v = validation.owner_value(owner)
    session_id = _session_id(session_id)
    reply = yield from _write(ctx, session_id, owner_v, scripts.POP, [])
    if reply[0] == 0:
        return None
    if reply[0] != 1:
        _check_status(reply[0], session_id)
    message = codec.decode_message(reply[1], session_id)
    ids = [message.id] if message is not None else []
    yield from _removed(ctx, session_id, owner_v, owner, ids, reply[3], reply[2], sender)
    return message


def get_context(
    ctx: Context, session_id: str, *, max_tokens: int, owner: str | None, include_system: bool
) -> Operation[list[Message]]:
    owner_v = validation.owner_value(owner)
    max_tokens = validation.positive_int(max_tokens, field="max_tokens", maximum=2**53)
    if not isinstance(include_system, bool):
        raise InvalidInput("include_system must be True or False.", field="include_system")
    session_id = _session_id(session_id)
    args = [max_tokens, "1" if include_system else "0", BYTES_PER_TOKEN, MAX_CONTEXT_MESSAGES]
    raws = yield from _read_messages(ctx, session_id, owner_v, scripts.CONTEXT, args)
    return codec.decode_messages(raws, session_id)


def events_since(
    ctx: Context, session_id: str, last_event_id: str, *, owner: str | None
) -> Operation[tuple[list[codec.Event], bool]]:
    """The session's events after ``last_event_id`` and whether the stream still reaches back that far
    (False: some were trimmed away, and the reader should reload the session)."""
    owner_v = validation.owner_value(owner)
    last = validation.event_id(last_event_id)
    session_id = _session_id(session_id)
    keys = ctx.keys
    reply = yield Run(
        scripts.EVENTS_SINCE,
        [keys.meta(session_id), keys.events(session_id)],
        [owner_v, last, MAX_EVENTS_SINCE],
    )
    if reply is None:
        raise SessionNotFound(session_id)
    trimmed, oldest, entries = as_text(reply[0]), as_text(reply[1]), reply[2]
    events = [e for entry in entries if (e := codec.decode_stream_entry(entry[0], entry[1])) is not None]
    # The stream is trimmed from its oldest end: it holds everything after ``last`` when nothing was
    # ever trimmed, or when its oldest entry is not newer than ``last`` (or it is empty).
    complete = trimmed == "0" or not oldest or _event_key(oldest) <= _event_key(last)
    return events, complete


def _event_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms or 0), int(seq or 0)


def _message_batch(
    ctx: Context, specs: Iterable[Mapping[str, Any]], *, allow_empty: bool = False
) -> tuple[list[bytes], list[tuple[Any, ...]]]:
    """Validate a batch of message specs as ``append_messages`` does: the bodies to store and the
    values they hold. Field errors name ``messages[i].field``, even for a batch of one."""
    cfg = ctx.config
    if isinstance(specs, Mapping | str | bytes):
        raise InvalidInput("Expected a list of messages.", field="messages")
    specs = list(specs)
    if not specs and not allow_empty:
        raise InvalidInput("Give at least one message.", field="messages")
    if len(specs) > cfg.max_messages:
        raise InvalidInput(f"At most {cfg.max_messages} messages in one batch.", field="messages")
    bodies: list[bytes] = []
    values: list[tuple[Any, ...]] = []
    for n, spec in enumerate(specs):
        prefix = f"messages[{n}]."
        if not isinstance(spec, Mapping):
            raise InvalidInput("Each message must be an object.", field=f"messages[{n}]")
        unknown = set(spec) - _MESSAGE_FIELDS
        if unknown:
            raise InvalidInput(f"Unknown field: {sorted(unknown)[0]}.", field=prefix + sorted(unknown)[0])
        body, fields = _body(
            ctx,
            spec.get("role"),
            spec.get("content"),
            spec.get("sources"),
            spec.get("status", "completed"),
            spec.get("data"),
            spec.get("token_count"),
            prefix,
        )
        bodies.append(body)
        values.append(fields)
    return bodies, values


def replace_messages(
    ctx: Context, session_id: str, specs: Iterable[Mapping[str, Any]], *, owner: str | None, sender: Any
) -> Operation[list[Message]]:
    """Every message of the session replaced by ``specs`` (possibly none) in one script: readers see
    the old history or the new one, never a mix. The new messages get the next ids."""
    cfg = ctx.config
    owner_v = validation.owner_value(owner)
    bodies, values = _message_batch(ctx, specs, allow_empty=True)
    session_id = _session_id(session_id)
    reply = yield from _write(
        ctx, session_id, owner_v, scripts.REPLACE, [cfg.max_messages, len(bodies), *bodies]
    )
    first = int(reply[0])
    if first < 0:
        if first == scripts.FULL:  # pragma: no cover (the batch size is checked above)
            raise SessionFull(f"A session holds at most {cfg.max_messages} messages.")
        _check_status(first, session_id)
    removed, now, cidem = int(reply[1]), reply[2], reply[3]
    if removed:
        yield from _removed(ctx, session_id, owner_v, owner, [], now, cidem, sender, after=0)
    else:
        yield from _after_write(ctx, owner_v, session_id, now, cidem)
    return (yield from _appended(session_id, owner, values, first, now, sender))


def _appended(
    session_id: str, owner: str | None, values: list[tuple[Any, ...]], first: int, now: Any, sender: Any
) -> Operation[list[Message]]:
    """The messages a script just appended (ids from ``first``, written at ``now``), after their
    ``message_appended`` signals."""
    created_at = codec.from_millis(now)
    messages = [
        Message(first + i, role, content, sources, created_at, state, data, tokens)
        for i, (role, content, sources, state, data, tokens) in enumerate(values)
    ]
    if signals.message_appended.receivers:
        for message in messages:
            yield Emit(
                signals.message_appended,
                {"sender": sender, "session_id": session_id, "message": message, "owner": owner},
            )
    return messages

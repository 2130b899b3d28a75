"""System checks for ``settings.CONVERSATIONS``. They read settings only and never touch the network.

=====================  ======================================================================================
id                     problem
=====================  ======================================================================================
conversations.E001     ``CONVERSATIONS`` is not a dict
conversations.E002     ``CACHE_ALIAS`` is not a key of ``CACHES``
conversations.E003     the cache is neither django-redis nor Django's RedisCache (and no ``CLIENT_FACTORY``)
conversations.E004     ``KEY_PREFIX`` is empty, not a string, or holds braces/whitespace
conversations.E005     ``SESSION_TTL`` is not a positive integer
conversations.E006     a size limit (``MAX_*``) is not a positive integer
conversations.E007     ``ROLES`` is not a non-empty list of distinct, non-empty strings
conversations.E008     ``ALLOW_ANONYMOUS`` is not a bool
conversations.E009     ``OWNER_RESOLVER`` or ``CLIENT_FACTORY`` does not import as a callable
conversations.E010     the cache uses django-redis's ``ShardClient`` (use one Redis, Sentinel or Cluster)
conversations.E011     ``SentinelClient`` without ``SentinelConnectionFactory`` and ``SENTINELS``
conversations.E012     a ``ClusterClient`` cache whose ``LOCATION`` is not a list of node URLs
conversations.E013     ``REPLICA_ACKS`` is not an integer >= 0 or ``REPLICA_ACK_TIMEOUT`` not > 0
conversations.E014     ``REPLICA_ACKS`` > 0 on a Redis Cluster (not supported)
conversations.E015     ``ASYNC_CLIENT_FACTORY`` does not import as a callable
conversations.E016     ``EVENT_HISTORY`` is not an integer >= 0
conversations.W001     ``CONVERSATIONS`` has a key this app does not know (a typo?)
conversations.W002     the cache has no socket timeout: an unreachable Redis would hang requests
conversations.W003     ``REPLICA_ACK_TIMEOUT`` is not shorter than the cache's socket timeout
conversations.W004     the store's client may send a timed-out write again (``retry``/``retry_on_timeout`` in
                       the cache's OPTIONS, or a ``CLIENT_FACTORY`` on a redis-py whose default retries)
=====================  ======================================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import redis
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .clients import (
    CLUSTER_CLIENT,
    DJANGO_BUILTIN_BACKEND,
    DJANGO_REDIS_BACKEND,
    SHARD_CLIENT,
    cluster_seed_nodes,
)
from .conf import DEFAULTS

SIZE_LIMITS = (
    "MAX_MESSAGE_LENGTH",
    "MAX_MESSAGES",
    "MAX_SOURCES",
    "MAX_SOURCES_BYTES",
    "MAX_MESSAGE_DATA_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_TITLE_LENGTH",
)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    raw = getattr(settings, "CONVERSATIONS", {})
    if not isinstance(raw, Mapping):
        return [Error("CONVERSATIONS must be a dict.", id="conversations.E001")]
    errors: list[CheckMessage] = []
    for name in sorted(set(raw) - set(DEFAULTS)):
        errors.append(
            Warning(
                f"CONVERSATIONS has an unknown key {name!r}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="conversations.W001",
            )
        )
    errors.extend(_check_cache(raw))
    errors.extend(_check_replication(raw))
    prefix = raw.get("KEY_PREFIX", DEFAULTS["KEY_PREFIX"])
    if (
        not isinstance(prefix, str)
        or not prefix
        or any(c in prefix for c in "{}")
        or not prefix.isprintable()
    ):
        errors.append(
            Error(
                "CONVERSATIONS['KEY_PREFIX'] must be a non-empty string without braces or whitespace.",
                hint="Braces would change the keys' Redis Cluster hash tags.",
                id="conversations.E004",
            )
        )
    elif any(c.isspace() for c in prefix):
        errors.append(
            Error("CONVERSATIONS['KEY_PREFIX'] must not contain whitespace.", id="conversations.E004")
        )
    if not _is_positive_int(raw.get("SESSION_TTL", DEFAULTS["SESSION_TTL"])):
        errors.append(
            Error(
                "CONVERSATIONS['SESSION_TTL'] must be a positive number of seconds.", id="conversations.E005"
            )
        )
    for name in SIZE_LIMITS:
        if not _is_positive_int(raw.get(name, DEFAULTS[name])):
            errors.append(
                Error(f"CONVERSATIONS[{name!r}] must be a positive integer.", id="conversations.E006")
            )
    history = raw.get("EVENT_HISTORY", DEFAULTS["EVENT_HISTORY"])
    if not isinstance(history, int) or isinstance(history, bool) or history < 0:
        errors.append(
            Error(
                "CONVERSATIONS['EVENT_HISTORY'] must be an integer >= 0 (0 turns live events off).",
                id="conversations.E016",
            )
        )
    roles = raw.get("ROLES", DEFAULTS["ROLES"])
    if (
        not isinstance(roles, list | tuple)
        or not roles
        or not all(isinstance(r, str) and r for r in roles)
        or len(set(roles)) != len(roles)
    ):
        errors.append(
            Error(
                "CONVERSATIONS['ROLES'] must be a non-empty list of distinct, non-empty strings.",
                id="conversations.E007",
            )
        )
    if not isinstance(raw.get("ALLOW_ANONYMOUS", DEFAULTS["ALLOW_ANONYMOUS"]), bool):
        errors.append(
            Error("CONVERSATIONS['ALLOW_ANONYMOUS'] must be True or False.", id="conversations.E008")
        )
    for name, check_id in (
        ("OWNER_RESOLVER", "conversations.E009"),
        ("CLIENT_FACTORY", "conversations.E009"),
        ("ASYNC_CLIENT_FACTORY", "conversations.E015"),
    ):
        path = raw.get(name, DEFAULTS[name])
        if path is None and name != "OWNER_RESOLVER":
            continue
        try:
            target = import_string(path) if isinstance(path, str) else None
        except ImportError as exc:
            errors.append(Error(f"CONVERSATIONS[{name!r}] could not be imported: {exc}", id=check_id))
            continue
        if not callable(target):
            errors.append(
                Error(f"CONVERSATIONS[{name!r}] must be the dotted path of a callable.", id=check_id)
            )
    return errors


def _check_cache(raw: Mapping[str, Any]) -> list[CheckMessage]:
    alias = raw.get("CACHE_ALIAS", DEFAULTS["CACHE_ALIAS"])
    caches = getattr(settings, "CACHES", {})
    if not isinstance(alias, str) or alias not in caches:
        return [
            Error(
                f"CONVERSATIONS['CACHE_ALIAS'] is {alias!r}, which is not a key of CACHES.",
                hint="Add a django-redis cache to CACHES or point CACHE_ALIAS at one.",
                id="conversations.E002",
            )
        ]
    if raw.get("CLIENT_FACTORY") is not None:
        return []
    cache = caches[alias]
    backend = cache.get("BACKEND", "")
    options = cache.get("OPTIONS") or {}
    if backend == DJANGO_BUILTIN_BACKEND:
        # Django's own backend hands OPTIONS to redis-py as they are: lower-case names.
        return _check_socket_timeout(alias, options, "socket_timeout", raw)
    if backend != DJANGO_REDIS_BACKEND:
        return [
            Error(
                f"The cache {alias!r} uses {backend!r}, which is neither django-redis nor Django's "
                "RedisCache.",
                hint="Use BACKEND 'django_redis.cache.RedisCache' (or set CLIENT_FACTORY).",
                id="conversations.E003",
            )
        ]
    errors = _check_django_redis_client(alias, cache, raw)
    return errors or _check_socket_timeout(alias, options, "SOCKET_TIMEOUT", raw)


def _check_django_redis_client(
    alias: str, cache: Mapping[str, Any], raw: Mapping[str, Any]
) -> list[CheckMessage]:
    """What the store needs from django-redis's client classes (E010-E012, E014)."""
    options = cache.get("OPTIONS") or {}
    client_class = _import_or_none(options.get("CLIENT_CLASS", "django_redis.client.DefaultClient"))
    if _is_subclass(client_class, SHARD_CLIENT):
        return [
            Error(
                f"The cache {alias!r} uses django-redis's ShardClient, which the conversation store "
                "cannot use.",
                hint=(
                    "ShardClient spreads keys over independent servers with no failover, so a session and "
                    "its owner's index could live apart. For one server (or Sentinel) use the default "
                    "client; to spread data over several, run a Redis Cluster with CLIENT_CLASS "
                    f"'{CLUSTER_CLIENT}'."
                ),
                id="conversations.E010",
            )
        ]
    if _is_subclass(client_class, "django_redis.client.SentinelClient"):
        factory = _import_or_none(
            options.get("CONNECTION_FACTORY")
            or getattr(settings, "DJANGO_REDIS_CONNECTION_FACTORY", "django_redis.pool.ConnectionFactory")
        )
        if not _is_subclass(factory, "django_redis.pool.SentinelConnectionFactory") or not options.get(
            "SENTINELS"
        ):
            return [
                Error(
                    f"The cache {alias!r} uses SentinelClient without Sentinel connections.",
                    hint=(
                        "Set OPTIONS['CONNECTION_FACTORY'] = 'django_redis.pool.SentinelConnectionFactory' "
                        "and OPTIONS['SENTINELS'] = [(host, port), ...]; LOCATION is "
                        "'redis://<service name>/0'."
                    ),
                    id="conversations.E011",
                )
            ]
    if _is_subclass(client_class, CLUSTER_CLIENT):
        try:
            cluster_seed_nodes(cache.get("LOCATION") or "")
        except ValueError as exc:
            return [
                Error(
                    f"The Redis Cluster cache {alias!r} has an unusable LOCATION: {exc}",
                    hint="LOCATION lists one or more nodes: 'redis://10.0.0.1:6379,redis://10.0.0.2:6379'.",
                    id="conversations.E012",
                )
            ]
        if _is_positive_int(raw.get("REPLICA_ACKS", DEFAULTS["REPLICA_ACKS"])):
            return [
                Error(
                    "CONVERSATIONS['REPLICA_ACKS'] is not supported on a Redis Cluster.",
                    hint="Set it to 0; see the README's Deployment section for what a cluster guarantees.",
                    id="conversations.E014",
                )
            ]
    return []


def _check_socket_timeout(
    alias: str, options: Mapping[str, Any], name: str, raw: Mapping[str, Any]
) -> list[CheckMessage]:
    timeout = options.get(name)
    if timeout is None:
        return [
            Warning(
                f"The cache {alias!r} has no OPTIONS[{name!r}].",
                hint="Without it a request waits forever on an unreachable Redis; 1 to 5 seconds is usual.",
                id="conversations.W002",
            )
        ]
    acks = raw.get("REPLICA_ACKS", DEFAULTS["REPLICA_ACKS"])
    ack_timeout = raw.get("REPLICA_ACK_TIMEOUT", DEFAULTS["REPLICA_ACK_TIMEOUT"])
    if (
        _is_positive_int(acks)
        and _is_positive_number(ack_timeout)
        and _is_positive_number(timeout)
        and ack_timeout >= timeout
    ):
        return [
            Warning(
                f"CONVERSATIONS['REPLICA_ACK_TIMEOUT'] ({ack_timeout} s) is not shorter than the cache "
                f"{alias!r}'s OPTIONS[{name!r}] ({timeout} s).",
                hint="The socket would time out before Redis answers WAIT; make the ack timeout shorter.",
                id="conversations.W003",
            )
        ]
    return []


@register(Tags.compatibility)
def check_write_retries(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W004: a client that sends a timed-out command again can run a write twice (the first attempt
    may have reached Redis), and a create or append without an idempotency key then happens twice."""
    raw = getattr(settings, "CONVERSATIONS", {})
    if not isinstance(raw, Mapping):
        return []  # E001
    alias = raw.get("CACHE_ALIAS", DEFAULTS["CACHE_ALIAS"])
    hint = (
        "Let the app see the failure (StoreUnavailable, HTTP 503) and retry with an idempotency key: pass "
        "retry=Retry(NoBackoff(), 0) (redis.retry, redis.backoff) and leave retry_on_timeout off."
    )
    if raw.get("CLIENT_FACTORY") is not None:
        defaults = _default_retries()
        if not defaults:
            return []
        return [
            Warning(
                f"CONVERSATIONS['CLIENT_FACTORY'] builds the store's client itself, and redis-py "
                f"{redis.__version__}'s redis.Redis retries a failed command {defaults} times unless told "
                "otherwise, so a write that timed out may run again.",
                hint=hint + " Once the factory does, silence this with SILENCED_SYSTEM_CHECKS.",
                id="conversations.W004",
            )
        ]
    cache = getattr(settings, "CACHES", {}).get(alias)
    if not isinstance(cache, Mapping):
        return []  # E002
    options = cache.get("OPTIONS") or {}
    if cache.get("BACKEND") == DJANGO_BUILTIN_BACKEND:
        places = {"OPTIONS": options}  # handed to redis-py's connection pool as they are
    else:
        places = {
            f"OPTIONS[{name!r}]": options.get(name) or {}
            for name in ("REDIS_CLIENT_KWARGS", "CONNECTION_POOL_KWARGS", "CLUSTER_KWARGS")
        }
    found = [
        f"{place} sets {setting}"
        for place, kwargs in places.items()
        if isinstance(kwargs, Mapping)
        for setting in _retrying_settings(kwargs)
    ]
    if not found:
        return []
    return [
        Warning(
            f"The cache {alias!r} makes the store's client retry: {'; '.join(found)}. A write that timed "
            "out may already have run, so running it again can apply it twice.",
            hint=hint,
            id="conversations.W004",
        )
    ]


def _retries(retry: Any) -> int:
    """How many times a redis-py ``Retry`` sends a command again (0 for None or no ``Retry``)."""
    count = getattr(retry, "_retries", 0)
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def _default_retries() -> int:
    """The retries of ``redis.Redis(...)`` built without ``retry=`` (10 on redis-py 8, 0 on 5)."""
    parameter = inspect.signature(redis.Redis.__init__).parameters.get("retry")
    return _retries(parameter.default) if parameter is not None else 0


def _retrying_settings(kwargs: Mapping[str, Any]) -> list[str]:
    found = []
    retry = kwargs.get("retry")
    if _retries(retry):
        found.append(f"retry (a Retry of {_retries(retry)} retries)")
    if kwargs.get("retry_on_timeout"):
        found.append("retry_on_timeout=True")
    attempts = kwargs.get("cluster_error_retry_attempts")
    if isinstance(attempts, int) and attempts > 0:
        found.append(f"cluster_error_retry_attempts={attempts}")
    return found


def _check_replication(raw: Mapping[str, Any]) -> list[CheckMessage]:
    acks = raw.get("REPLICA_ACKS", DEFAULTS["REPLICA_ACKS"])
    timeout = raw.get("REPLICA_ACK_TIMEOUT", DEFAULTS["REPLICA_ACK_TIMEOUT"])
    if not (isinstance(acks, int) and not isinstance(acks, bool) and acks >= 0) or not _is_positive_number(
        timeout
    ):
        return [
            Error(
                "CONVERSATIONS['REPLICA_ACKS'] must be an integer >= 0 and ['REPLICA_ACK_TIMEOUT'] a "
                "positive number of seconds.",
                id="conversations.E013",
            )
        ]
    return []


def _import_or_none(path: Any) -> Any:
    try:
        return import_string(path) if isinstance(path, str) else None
    except ImportError:
        return None  # django-redis reports a CLIENT_CLASS it cannot import itself


def _is_subclass(cls: Any, path: str) -> bool:
    target = _import_or_none(path)
    return isinstance(cls, type) and isinstance(target, type) and issubclass(cls, target)


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


__all__ = ["check_settings", "check_write_retries"]

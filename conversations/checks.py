"""System checks for ``settings.CONVERSATIONS``. They read settings only and never touch the network.

=====================  ===============================================================
id                     problem
=====================  ===============================================================
conversations.E001     ``CONVERSATIONS`` is not a dict
conversations.E002     ``CACHE_ALIAS`` is not a key of ``CACHES``
conversations.E003     that cache is not a django-redis cache (and no ``CLIENT_FACTORY``)
conversations.E004     ``KEY_PREFIX`` is empty, not a string, or holds braces/whitespace
conversations.E005     ``SESSION_TTL`` is not a positive integer
conversations.E006     a size limit (``MAX_*``) is not a positive integer
conversations.E007     ``ROLES`` is not a non-empty list of distinct, non-empty strings
conversations.E008     ``ALLOW_ANONYMOUS`` is not a bool
conversations.E009     ``OWNER_RESOLVER`` or ``CLIENT_FACTORY`` does not import as a callable
conversations.W001     ``CONVERSATIONS`` has a key this app does not know (a typo?)
conversations.W002     the cache has no ``SOCKET_TIMEOUT``: an unreachable Redis would hang requests
=====================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .conf import DEFAULTS, conf

SIZE_LIMITS = (
    "MAX_MESSAGE_LENGTH",
    "MAX_MESSAGES",
    "MAX_SOURCES",
    "MAX_SOURCES_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_TITLE_LENGTH",
)

DJANGO_REDIS_BACKENDS = ("django_redis.cache.RedisCache",)


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
    for name in ("OWNER_RESOLVER", "CLIENT_FACTORY"):
        path = raw.get(name, DEFAULTS[name])
        if path is None and name == "CLIENT_FACTORY":
            continue
        try:
            target = import_string(path) if isinstance(path, str) else None
        except ImportError as exc:
            errors.append(
                Error(f"CONVERSATIONS[{name!r}] could not be imported: {exc}", id="conversations.E009")
            )
            continue
        if not callable(target):
            errors.append(
                Error(
                    f"CONVERSATIONS[{name!r}] must be the dotted path of a callable.", id="conversations.E009"
                )
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
    if backend not in DJANGO_REDIS_BACKENDS:
        return [
            Error(
                f"The cache {alias!r} uses {backend!r}, not django-redis.",
                hint="Use BACKEND 'django_redis.cache.RedisCache' (or set CLIENT_FACTORY).",
                id="conversations.E003",
            )
        ]
    options = cache.get("OPTIONS") or {}
    if "SOCKET_TIMEOUT" not in options:
        return [
            Warning(
                f"The cache {alias!r} has no OPTIONS['SOCKET_TIMEOUT'].",
                hint="Without it a request waits forever on an unreachable Redis; 1 to 5 seconds is usual.",
                id="conversations.W002",
            )
        ]
    return []


__all__ = ["check_settings", "conf"]

"""Which redis-py client the store runs on, for each way a site can reach Redis.

* **django-redis** (``django_redis.cache.RedisCache``), with any client class that has one primary:
  the default client, ``HerdClient``, ``SentinelClient`` (through ``SentinelConnectionFactory``). The store
  takes django-redis's raw client for writes (``get_redis_connection(alias, write=True)``).
* **Redis Cluster**: django-redis has no cluster client, so this module provides ``ClusterClient``, a
  django-redis client class (``OPTIONS["CLIENT_CLASS"]``) that hands out one redis-py ``RedisCluster``
  built from the cache's ``LOCATION`` (seed node URLs) and ``OPTIONS``. The store detects the cluster and
  keeps each of its Lua scripts within one hash slot.
* **Django's built-in** ``django.core.cache.backends.redis.RedisCache``: the store writes through the
  cache's first server (its write server), with the cache's own ``OPTIONS``.
* django-redis's ``ShardClient`` is refused (system check ``conversations.E010``): it spreads keys over
  independent servers by its own hash ring, with no failover and no way to run a script across them.

``CONVERSATIONS["CLIENT_FACTORY"]`` overrides all of this with a callable of the site's own.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured
from django_redis.client import DefaultClient
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

DJANGO_REDIS_BACKEND = "django_redis.cache.RedisCache"
DJANGO_BUILTIN_BACKEND = "django.core.cache.backends.redis.RedisCache"
SHARD_CLIENT = "django_redis.client.ShardClient"
CLUSTER_CLIENT = "conversations.clients.ClusterClient"

# One RedisCluster per configuration, per process: it holds the slot map and a pool per node, and is
# thread-safe. django-redis builds a client object per thread (caches are thread-local), so without
# this every thread would map the cluster again.
_clusters: dict[tuple[Any, ...], RedisCluster] = {}
_builtin_clients: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def cluster_seed_nodes(location: str | Sequence[str]) -> list[tuple[str, int]]:
    """The (host, port) seed nodes of a cluster ``LOCATION``; ValueError says what is wrong.

    ``LOCATION`` is one ``redis://`` / ``rediss://`` URL or several (a list, or a comma-separated
    string), each naming a node of the cluster; any reachable node is enough to discover the rest.
    """
    urls = location.split(",") if isinstance(location, str) else list(location)
    if not urls or not all(isinstance(url, str) and url.strip() for url in urls):
        raise ValueError("LOCATION must name at least one node URL, e.g. 'redis://10.0.0.1:6379'.")
    schemes = set()
    nodes = []
    for url in urls:
        parts = urlsplit(url.strip())
        if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
            raise ValueError(f"{url!r} is not a redis:// or rediss:// URL with a host.")
        if parts.path.strip("/") not in {"", "0"}:
            raise ValueError(f"{url!r} selects a database; a Redis Cluster has only database 0.")
        try:
            port = parts.port or 6379
        except ValueError as exc:
            raise ValueError(f"{url!r} has an invalid port.") from exc
        schemes.add(parts.scheme)
        nodes.append((parts.hostname, port))
    if len(schemes) > 1:
        raise ValueError("LOCATION mixes redis:// and rediss:// URLs.")
    return nodes


def _build_cluster(servers: Sequence[str], options: Mapping[str, Any]) -> RedisCluster:
    try:
        nodes = cluster_seed_nodes(servers)
    except ValueError as exc:
        raise ImproperlyConfigured(f"Redis Cluster cache: {exc}") from exc
    first = urlsplit(servers[0].strip())
    kwargs: dict[str, Any] = {
        "ssl": first.scheme == "rediss",
        # Same option names as django-redis's own client, so a cache can switch clients unchanged.
        "username": options.get("USERNAME") or (unquote(first.username) if first.username else None),
        "password": options.get("PASSWORD") or (unquote(first.password) if first.password else None),
        "socket_timeout": options.get("SOCKET_TIMEOUT"),
        "socket_connect_timeout": options.get("SOCKET_CONNECT_TIMEOUT"),
        # No silent retries (RedisCluster's default retries 3 times, and its nodes' connections again):
        # a script whose reply timed out may have run, and running it again appends twice. The caller
        # gets StoreUnavailable and retries with its idempotency key, as on a single Redis.
        "retry": Retry(NoBackoff(), 0),
    }
    kwargs.update(options.get("CLUSTER_KWARGS") or {})
    seeds = [ClusterNode(host, port) for host, port in nodes]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=seeds, **kwargs)


class ClusterClient(DefaultClient):  # type: ignore[misc]  # django-redis ships no type hints
    """django-redis client class for a Redis Cluster: ``OPTIONS["CLIENT_CLASS"]``.

    ``LOCATION`` lists seed nodes (``redis://host:port``; ``rediss://`` for TLS); ``OPTIONS`` takes
    django-redis's ``SOCKET_TIMEOUT``, ``SOCKET_CONNECT_TIMEOUT``, ``USERNAME``, ``PASSWORD``, and
    ``CLUSTER_KWARGS`` (passed to ``redis.cluster.RedisCluster`` as is). Meant for the store's alias:
    Django cache calls on one key work, but multi-key ones (``get_many``, ``delete_many``) raise
    when their keys live in different slots.
    """

    def get_next_client_index(self, write: bool = True, tried: list[int] | None = None) -> int:
        # One RedisCluster routes to every node; the other LOCATION entries are only seeds.
        return 0

    def connect(self, index: int = 0) -> RedisCluster:
        servers = [str(s) for s in self._server]
        options = dict(self._options)
        key = (tuple(servers), repr(sorted(options.items(), key=lambda item: str(item[0]))))
        with _lock:
            client = _clusters.get(key)
            if client is None:
                client = _clusters[key] = _build_cluster(servers, options)
        return client

    def disconnect(self, index: int = 0, client: Any = None) -> None:
        # django-redis would call client.connection_pool.disconnect(); a cluster has one pool per node.
        client = client if client is not None else self._clients[index]
        if client is not None:
            client.disconnect_connection_pools()


def _builtin_cache_client(alias: str, config: Mapping[str, Any]) -> Any:
    """The write client of a cache on Django's built-in RedisCache, shared by every thread."""
    key = (alias, repr(sorted(config.items(), key=lambda item: str(item[0]))))
    with _lock:
        client = _builtin_clients.get(key)
        if client is None:
            from django.core.cache import caches

            # Django builds the client from the cache's LOCATION and OPTIONS (the first server takes
            # the writes). Its pools belong to the per-thread cache object, so keep one client for all.
            cache_client = cast(Any, caches[alias])._cache
            client = _builtin_clients[key] = cache_client.get_client(None, write=True)
    return client


def cache_client(alias: str) -> Any:
    """The raw redis-py client behind ``CACHES[alias]`` (see the module docstring)."""
    from django.conf import settings

    caches: Mapping[str, Any] = getattr(settings, "CACHES", {})
    config = caches.get(alias)
    if config is None:
        raise ImproperlyConfigured(f"There is no cache {alias!r} in CACHES.")
    backend = config.get("BACKEND", "")
    if backend == DJANGO_BUILTIN_BACKEND:
        return _builtin_cache_client(alias, config)
    if backend == DJANGO_REDIS_BACKEND and (config.get("OPTIONS") or {}).get("CLIENT_CLASS") == SHARD_CLIENT:
        raise ImproperlyConfigured(
            f"The cache {alias!r} uses django-redis's ShardClient, which the conversation store cannot "
            f"use; see the system check conversations.E010."
        )
    from django_redis import get_redis_connection

    try:
        return get_redis_connection(alias, write=True)
    except NotImplementedError as exc:
        raise ImproperlyConfigured(
            f"The cache {alias!r} is neither a django-redis cache nor Django's RedisCache; "
            "set CONVERSATIONS['CACHE_ALIAS'] to one."
        ) from exc


__all__ = ["ClusterClient", "cache_client", "cluster_seed_nodes"]


# --- TEMPORARY (lead's stand-in until the async client work lands) ---
_async_clients: dict[Any, Any] = {}


def get_async_redis_client(alias: str | None = None) -> Any:
    import asyncio

    import redis.asyncio

    loop = asyncio.get_running_loop()
    client = _async_clients.get((loop, alias))
    if client is None:
        from django.conf import settings

        url = settings.CACHES[alias or "default"]["LOCATION"]
        client = _async_clients[(loop, alias)] = redis.asyncio.Redis.from_url(str(url))
    return client

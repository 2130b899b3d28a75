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

**Async** (``async_cache_client``, ``get_async_redis_client``): the native ``redis.asyncio`` client for
the same ``CACHES`` entry, built from its public configuration (``LOCATION`` and ``OPTIONS``, read the way
django-redis or Django read them), one per running event loop. A ``redis.asyncio`` connection belongs to
the loop it was opened on; using it from another loop (a second ``asyncio.run``, pytest's per-test loops,
``async_to_sync`` threads) fails or hangs. So every loop gets its own client, made on first use and closed
when that loop closes. These clients never retry a command on their own: a script whose reply timed out
may have run, and running it again would append twice. ``CONVERSATIONS["ASYNC_CLIENT_FACTORY"]``
overrides the async client the way ``CLIENT_FACTORY`` overrides the sync one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from django_redis.client import DefaultClient
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

if TYPE_CHECKING:
    import redis.asyncio
    import redis.asyncio.cluster

    AsyncRedisClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

logger = logging.getLogger("conversations")

DJANGO_REDIS_BACKEND = "django_redis.cache.RedisCache"
DJANGO_BUILTIN_BACKEND = "django.core.cache.backends.redis.RedisCache"
SHARD_CLIENT = "django_redis.client.ShardClient"
SENTINEL_CLIENT = "django_redis.client.SentinelClient"
SENTINEL_FACTORY = "django_redis.pool.SentinelConnectionFactory"
CLUSTER_CLIENT = "conversations.clients.ClusterClient"

# One RedisCluster per configuration, per process: it holds the slot map and a pool per node, and is
# thread-safe. django-redis builds a client object per thread (caches are thread-local), so without
# this every thread would map the cluster again.
_clusters: dict[tuple[Any, ...], RedisCluster] = {}
_builtin_clients: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def _config_key(servers: Sequence[str], options: Mapping[str, Any]) -> tuple[Any, ...]:
    return (tuple(servers), repr(sorted(options.items(), key=lambda item: str(item[0]))))


def _server_list(location: Any, separators: str) -> list[str]:
    """``LOCATION`` as a list of URLs, split the way the backend splits it (django-redis: ``,``;
    Django: ``,`` or ``;``)."""
    if isinstance(location, str):
        return [url.strip() for url in re.split(f"[{separators}]", location) if url.strip()]
    return [str(url).strip() for url in location or ()]


def _import(path: Any) -> Any:
    return import_string(path) if isinstance(path, str) else path


def _is_subclass(cls: Any, path: str) -> bool:
    try:
        target = import_string(path)
    except ImportError:  # pragma: no cover - django-redis is a dependency
        return False
    return isinstance(cls, type) and issubclass(cls, target)


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


def _cluster_settings(
    servers: Sequence[str], options: Mapping[str, Any]
) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Seed nodes and the keyword arguments shared by the sync and the async ``RedisCluster``."""
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
    }
    return nodes, kwargs


def _build_cluster(servers: Sequence[str], options: Mapping[str, Any]) -> RedisCluster:
    nodes, kwargs = _cluster_settings(servers, options)
    # No silent retries (RedisCluster's default retries 3 times, and its nodes' connections again):
    # a script whose reply timed out may have run, and running it again appends twice. The caller
    # gets StoreUnavailable and retries with its idempotency key, as on a single Redis.
    kwargs["retry"] = Retry(NoBackoff(), 0)
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

    def __init__(self, server: Any, params: dict[str, Any], backend: Any) -> None:
        super().__init__(server, params, backend)
        # Kept from django-redis's documented constructor arguments (LOCATION and the rest of the
        # CACHES entry), not read back from its private attributes.
        self.cluster_servers = _server_list(server, ",")
        self.cluster_options: Mapping[str, Any] = params.get("OPTIONS") or {}

    def get_next_client_index(self, write: bool = True, tried: list[int] | None = None) -> int:
        # One RedisCluster routes to every node; the other LOCATION entries are only seeds.
        return 0

    def connect(self, index: int = 0) -> RedisCluster:
        key = _config_key(self.cluster_servers, self.cluster_options)
        with _lock:
            client = _clusters.get(key)
            if client is None:
                client = _clusters[key] = _build_cluster(self.cluster_servers, self.cluster_options)
        return client

    def disconnect(self, index: int = 0, client: Any = None) -> None:
        # django-redis would call client.connection_pool.disconnect(); a cluster has one pool per node.
        if client is None:
            client = _clusters.get(_config_key(self.cluster_servers, self.cluster_options))
        if client is not None:
            client.disconnect_connection_pools()


def _builtin_cache_client(alias: str, config: Mapping[str, Any]) -> Any:
    """The write client of a cache on Django's built-in RedisCache, shared by every thread.

    Built the way Django's ``RedisCacheClient`` builds it, from the same ``LOCATION`` (the first server
    takes the writes) and ``OPTIONS`` (``pool_class``, ``parser_class``, the rest for the pool; the
    ``serializer`` is the cache's business, not the store's). Django keeps its pools on the per-thread
    cache object, so the store keeps one client of its own for all threads.
    """
    key = (alias, repr(sorted(config.items(), key=lambda item: str(item[0]))))
    with _lock:
        client = _builtin_clients.get(key)
        if client is None:
            import redis

            servers = _server_list(config.get("LOCATION"), ",;")
            if not servers:
                raise ImproperlyConfigured(f"The cache {alias!r} has no LOCATION.")
            options = dict(config.get("OPTIONS") or {})
            options.pop("serializer", None)
            pool_class = _import(options.pop("pool_class", None)) or redis.ConnectionPool
            parser_class = _import(options.pop("parser_class", None)) or redis.connection.DefaultParser
            pool = pool_class.from_url(servers[0], parser_class=parser_class, **options)
            client = _builtin_clients[key] = redis.Redis(connection_pool=pool)
    return client


def _cache_config(alias: str) -> Mapping[str, Any]:
    caches: Mapping[str, Any] = getattr(settings, "CACHES", {})
    config: Mapping[str, Any] | None = caches.get(alias)
    if config is None:
        raise ImproperlyConfigured(f"There is no cache {alias!r} in CACHES.")
    return config


def _refuse_shard_client(alias: str, config: Mapping[str, Any]) -> None:
    if (config.get("OPTIONS") or {}).get("CLIENT_CLASS") == SHARD_CLIENT:
        raise ImproperlyConfigured(
            f"The cache {alias!r} uses django-redis's ShardClient, which the conversation store cannot "
            f"use; see the system check conversations.E010."
        )


def _not_a_redis_cache(alias: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"The cache {alias!r} is neither a django-redis cache nor Django's RedisCache; "
        "set CONVERSATIONS['CACHE_ALIAS'] to one."
    )


def cache_client(alias: str) -> Any:
    """The raw redis-py client behind ``CACHES[alias]`` (see the module docstring)."""
    config = _cache_config(alias)
    backend = config.get("BACKEND", "")
    if backend == DJANGO_BUILTIN_BACKEND:
        return _builtin_cache_client(alias, config)
    if backend == DJANGO_REDIS_BACKEND:
        _refuse_shard_client(alias, config)
    from django_redis import get_redis_connection

    try:
        return get_redis_connection(alias, write=True)
    except NotImplementedError as exc:
        raise _not_a_redis_cache(alias) from exc


# ---------------------------------------------------------------------------------------------- async

# Options of a sync client that an async one cannot take: sync classes (connection, parser) and the
# retry policy, which the async clients always set to "never" (see _no_retry).
_SYNC_ONLY_KWARGS = frozenset(
    {"connection_class", "parser_class", "retry", "retry_on_error", "retry_on_timeout", "connection_pool"}
)
# How long closing a loop waits for its clients to close their connections.
_CLOSE_TIMEOUT = 2.0


def _async_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in kwargs.items() if name not in _SYNC_ONLY_KWARGS}


def _no_retry() -> dict[str, Any]:
    """Zero command retries. redis-py 6+ retries 3 times by default, and a command whose reply timed
    out may have run: a retried append script would append twice. The caller sees the error instead."""
    from redis.asyncio.retry import Retry as AsyncRetry

    return {"retry": AsyncRetry(NoBackoff(), 0)}


# A loop's pool, unless the site configures its own: this many connections, and a coroutine that finds
# them all busy waits for one (up to the socket timeout) instead of failing. redis-py 6+ caps a plain
# pool at 100 and fails the 101st concurrent command with "Too many connections"; one event loop easily
# runs more concurrent calls than that, which threads (one connection each) never did.
ASYNC_POOL_SIZE = 100
# Sentinel's and the cluster's pools cannot wait for a connection: they get no cap (as before
# redis-py 6) unless the site sets one, so a burst of concurrent calls opens what it needs.
_UNCAPPED = 2**31


def _async_pool(configured: Any, url: str, kwargs: dict[str, Any]) -> Any:
    """The redis.asyncio pool for ``url``: the async twin of a configured sync pool class (blocking or
    not), or by default a blocking pool of ``ASYNC_POOL_SIZE`` that waits up to the socket timeout."""
    import redis.asyncio

    cls = _import(configured)
    if _is_subclass(cls, "redis.asyncio.ConnectionPool"):
        pool_class = cls
    elif _is_subclass(cls, "redis.BlockingConnectionPool"):
        pool_class = redis.asyncio.BlockingConnectionPool
    elif cls is not None:
        pool_class = redis.asyncio.ConnectionPool
    else:
        pool_class = redis.asyncio.BlockingConnectionPool
        kwargs.setdefault("max_connections", ASYNC_POOL_SIZE)
        if kwargs.get("socket_timeout"):
            kwargs.setdefault("timeout", kwargs["socket_timeout"])
    return pool_class.from_url(url, **kwargs, **_no_retry())


def _django_redis_connection_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """What django-redis's ConnectionFactory passes to every connection: USERNAME, PASSWORD and the
    socket timeouts (set only when truthy, as it does), then ``CONNECTION_POOL_KWARGS`` on top."""
    kwargs: dict[str, Any] = {}
    for option, name in (
        ("USERNAME", "username"),
        ("PASSWORD", "password"),
        ("SOCKET_TIMEOUT", "socket_timeout"),
        ("SOCKET_CONNECT_TIMEOUT", "socket_connect_timeout"),
    ):
        if options.get(option):
            kwargs[name] = options[option]
    kwargs.update(_async_kwargs(options.get("CONNECTION_POOL_KWARGS") or {}))
    return kwargs


_Built = tuple[Any, list[Any]]  # (the client, what to close when its loop closes)


def _async_plain(url: str, options: Mapping[str, Any]) -> _Built:
    """django-redis with one server (DefaultClient, HerdClient): redis://, rediss:// or unix://."""
    import redis.asyncio

    # from_url gives the URL's credentials and db precedence over the keyword arguments, as django-redis.
    pool = _async_pool(options.get("CONNECTION_POOL_CLASS"), url, _django_redis_connection_kwargs(options))
    client = redis.asyncio.Redis(
        connection_pool=pool, **_async_kwargs(options.get("REDIS_CLIENT_KWARGS") or {})
    )
    return client, [client, pool]


def _async_sentinel(alias: str, url: str, options: Mapping[str, Any]) -> _Built:
    """django-redis over Sentinel: LOCATION ``redis://<service name>/<db>``, ``OPTIONS["SENTINELS"]``."""
    import redis.asyncio
    from redis.asyncio.connection import parse_url
    from redis.asyncio.sentinel import Sentinel

    sentinels = options.get("SENTINELS")
    if not sentinels:
        raise ImproperlyConfigured(
            f"The cache {alias!r} uses Sentinel without OPTIONS['SENTINELS']; see conversations.E011."
        )
    try:
        location: dict[str, Any] = dict(parse_url(url))
    except ValueError as exc:
        raise ImproperlyConfigured(f"The cache {alias!r} has an unusable LOCATION {url!r}: {exc}") from exc
    service = location.pop("host", None)
    if not service:
        raise ImproperlyConfigured(f"The cache {alias!r}: LOCATION must be 'redis://<service name>/<db>'.")
    for name in ("port", "is_master", "connection_class"):
        location.pop(name, None)
    connection = _django_redis_connection_kwargs(options)
    # Every new connection to the primary first asks a sentinel where the primary is, so a burst opens
    # as many sentinel connections as primary ones: no cap on either (see _UNCAPPED). Without
    # SENTINEL_KWARGS, redis-py gives the sentinels the socket options, as here.
    sentinel_kwargs = dict(
        options.get("SENTINEL_KWARGS") or {k: v for k, v in connection.items() if k.startswith("socket_")}
    )
    sentinel_kwargs.setdefault("max_connections", _UNCAPPED)
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis-py 8.2
        sentinels, sentinel_kwargs=sentinel_kwargs, **connection, **_no_retry()
    )
    # The store writes: always the primary, whatever ``is_master`` the URL carries.
    client = sentinel.master_for(
        service,
        redis_class=redis.asyncio.Redis,
        ssl=urlsplit(url).scheme == "rediss",
        max_connections=connection.get("max_connections", _UNCAPPED),
        **_async_kwargs(location),
    )
    return client, [client, *sentinel.sentinels]


def _async_cluster(servers: Sequence[str], options: Mapping[str, Any]) -> _Built:
    from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    nodes, kwargs = _cluster_settings(servers, options)
    kwargs.update(_no_retry(), max_connections=_UNCAPPED)  # per node; see _UNCAPPED
    kwargs.update(_async_kwargs(options.get("CLUSTER_KWARGS") or {}))
    client = AsyncRedisCluster(startup_nodes=[AsyncClusterNode(host, port) for host, port in nodes], **kwargs)
    return client, [client]


def _async_builtin(alias: str, config: Mapping[str, Any]) -> _Built:
    """Django's RedisCache: its first server (the write server) with its OPTIONS (redis-py names)."""
    import redis.asyncio

    servers = _server_list(config.get("LOCATION"), ",;")
    if not servers:
        raise ImproperlyConfigured(f"The cache {alias!r} has no LOCATION.")
    options = _async_kwargs(config.get("OPTIONS") or {})
    options.pop("serializer", None)
    pool = _async_pool(options.pop("pool_class", None), servers[0], options)
    client = redis.asyncio.Redis(connection_pool=pool)
    return client, [client, pool]


def _build_async_cache_client(alias: str, config: Mapping[str, Any]) -> _Built:
    backend = config.get("BACKEND", "")
    if backend == DJANGO_BUILTIN_BACKEND:
        return _async_builtin(alias, config)
    if backend != DJANGO_REDIS_BACKEND:
        raise _not_a_redis_cache(alias)
    _refuse_shard_client(alias, config)
    options: Mapping[str, Any] = config.get("OPTIONS") or {}
    servers = _server_list(config.get("LOCATION"), ",")
    if not servers:
        raise ImproperlyConfigured(f"The cache {alias!r} has no LOCATION.")
    client_class = _import(options.get("CLIENT_CLASS", "django_redis.client.DefaultClient"))
    if _is_subclass(client_class, CLUSTER_CLIENT):
        return _async_cluster(servers, options)
    factory = _import(
        options.get("CONNECTION_FACTORY")
        or getattr(settings, "DJANGO_REDIS_CONNECTION_FACTORY", "django_redis.pool.ConnectionFactory")
    )
    if _is_subclass(factory, SENTINEL_FACTORY):
        return _async_sentinel(alias, servers[0], options)
    if _is_subclass(client_class, SENTINEL_CLIENT):
        raise ImproperlyConfigured(
            f"The cache {alias!r} uses SentinelClient without SentinelConnectionFactory; "
            "see conversations.E011."
        )
    # django-redis writes to its first server (the others are read replicas).
    return _async_plain(servers[0], options)


class _LoopClients:
    """The async clients of one event loop, by what they were built for."""

    def __init__(self) -> None:
        # key -> (fingerprint of the configuration it was built from, client, resources to close)
        self.entries: dict[tuple[str, ...], tuple[str, Any, list[Any]]] = {}
        # Clients replaced because their configuration changed (tests do that); closed with the loop.
        self.retired: list[Any] = []
        # get_async_redis_client's answers by its ``alias`` argument: (the settings it was worked out
        # from, as _settings_copy took them, and the client). The store asks on every async call.
        self.answers: dict[str | None, tuple[tuple[Any, Any], Any]] = {}


_loop_clients: dict[asyncio.AbstractEventLoop, _LoopClients] = {}


def _running_loop(caller: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError as exc:
        raise RuntimeError(
            f"{caller}() needs a running event loop (call it from async code): a redis.asyncio client "
            "belongs to the loop it runs on. Sync code uses conversations.clients.cache_client()."
        ) from exc


def _per_loop(caller: str, key: tuple[str, ...], fingerprint: str, build: Callable[[], _Built]) -> Any:
    """The client for ``key`` on the running loop, built by ``build`` on its first use there."""
    loop = _running_loop(caller)
    # Fast path without the lock: only this loop's own thread adds to or replaces its entries.
    clients = _loop_clients.get(loop)
    entry = clients.entries.get(key) if clients is not None else None
    if entry is not None and entry[0] == fingerprint:
        return entry[1]
    client, resources = build()
    with _lock:
        # Loops closed without going through our close hook (it could not be installed) are forgotten
        # here: their connections died with them and cannot be awaited on a closed loop.
        for closed in [other for other in _loop_clients if other.is_closed()]:
            del _loop_clients[closed]
        clients = _loop_clients.get(loop)
        if clients is None:
            clients = _loop_clients[loop] = _LoopClients()
            _close_with_loop(loop)
    old = clients.entries.get(key)
    if old is not None:
        clients.retired.extend(old[2])
    clients.entries[key] = (fingerprint, client, resources)
    return client


def _close_with_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close the loop's clients when it closes (``asyncio.run`` closes its loop when done)."""
    original = loop.close

    def close() -> None:
        if not loop.is_running() and not loop.is_closed():
            _release_loop(loop)
        original()

    try:
        loop.close = close  # type: ignore[method-assign]
    except AttributeError:  # pragma: no cover - a loop class without instance attributes
        logger.debug("Cannot hook close() of %r; its Redis clients are dropped once it is closed.", loop)


def _release_loop(loop: asyncio.AbstractEventLoop) -> None:
    with _lock:
        clients = _loop_clients.pop(loop, None)
    if clients is None:
        return
    resources = [resource for entry in clients.entries.values() for resource in entry[2]]
    resources.extend(clients.retired)

    async def close_all() -> None:
        await asyncio.gather(*(_aclose(resource) for resource in resources), return_exceptions=True)

    try:
        loop.run_until_complete(asyncio.wait_for(close_all(), _CLOSE_TIMEOUT))
    except Exception:  # closing a loop must not fail because Redis is gone
        logger.debug("Closing the Redis clients of %r failed.", loop, exc_info=True)


async def _aclose(resource: Any) -> None:
    # redis-py >= 5.0.1 names it aclose(); connection pools also have disconnect().
    for name in ("aclose", "disconnect", "close"):
        method = getattr(resource, name, None)
        if method is not None:
            result = method()
            if asyncio.iscoroutine(result):
                await result
            return


def async_cache_client(alias: str) -> AsyncRedisClient:
    """The ``redis.asyncio`` client for ``CACHES[alias]``, one per running event loop.

    Built from the same ``CACHES`` entry as the sync client (see the module docstring): django-redis
    (one server, Sentinel through ``SentinelConnectionFactory``, or ``ClusterClient``, which gives a
    ``redis.asyncio.cluster.RedisCluster``) or Django's RedisCache. It never retries a command, and
    connection failures and timeouts raise redis-py's ``ConnectionError`` / ``TimeoutError``.
    Raises RuntimeError outside a running loop and ImproperlyConfigured for an unusable cache.
    """
    config = _cache_config(alias)
    client: AsyncRedisClient = _per_loop(
        "async_cache_client",
        ("cache", alias),
        repr(config),
        lambda: _build_async_cache_client(alias, config),
    )
    return client


def get_async_redis_client(alias: str | None = None) -> AsyncRedisClient:
    """The async client the store uses on the running loop: ``ASYNC_CLIENT_FACTORY(alias)`` if set
    (called once per event loop), else ``async_cache_client(alias)``; ``alias`` defaults to
    ``CONVERSATIONS["CACHE_ALIAS"]``.

    The store calls this on every async call, so the answer is kept per loop and given again for as
    long as ``CONVERSATIONS`` and ``CACHES`` (all it depends on) compare equal to what they were.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = _running_loop("get_async_redis_client")  # raises the explanation
    now = (getattr(settings, "CONVERSATIONS", None), getattr(settings, "CACHES", None))
    clients = _loop_clients.get(loop)
    answer = clients.answers.get(alias) if clients is not None else None
    if answer is not None and answer[0] == now:
        result: AsyncRedisClient = answer[1]
        return result
    result = _resolve_async_client(alias)
    clients = _loop_clients.get(loop)
    if clients is not None:  # always, once a client was made on this loop
        clients.answers[alias] = (_settings_copy(now), result)
    return result


def _settings_copy(value: Any) -> Any:
    """``value`` with its dicts, lists, tuples and sets copied (an edit in place then shows as a
    difference) and everything else kept as is (compared as itself, like ``repr`` fingerprints)."""
    if isinstance(value, dict):
        return {key: _settings_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_settings_copy(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_settings_copy(item) for item in value)
    if isinstance(value, set):
        return set(value)
    return value


def _resolve_async_client(alias: str | None) -> AsyncRedisClient:
    from conversations.conf import conf

    alias = alias or conf.CACHE_ALIAS
    factory_path = conf.ASYNC_CLIENT_FACTORY
    if not factory_path:
        return async_cache_client(alias)

    def build() -> _Built:
        client = import_string(factory_path)(alias)
        return client, [client]

    result: AsyncRedisClient = _per_loop(
        "get_async_redis_client", ("factory", factory_path, alias), factory_path, build
    )
    return result


def async_client_loops() -> int:
    """How many event loops the process holds async clients for (a loop's are dropped when it closes):
    for leak checks."""
    return len(_loop_clients)


__all__ = [
    "ClusterClient",
    "async_cache_client",
    "async_client_loops",
    "cache_client",
    "cluster_seed_nodes",
    "get_async_redis_client",
]
